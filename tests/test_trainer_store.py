"""trainer.store: run registry and metrics stream against a real redis-server."""

from __future__ import annotations

import logging

import pytest
import redis

from cxrl.infra.ports import free_port
from cxrl.infra.redis_local import LocalRedis
from trainer.store import RunStore, connect


@pytest.fixture(scope="module")
def redis_url():
    with LocalRedis() as url:
        yield url


@pytest.fixture
def store(redis_url, request):
    client = redis.Redis.from_url(redis_url)
    yield RunStore(client, prefix=f"t-{request.node.name}")
    client.close()


def test_register_metrics_and_list(store):
    store.register("run-a", out_dir="/tmp/a", config={"epochs": 2})
    store.register("run-b", out_dir="/tmp/b")
    store.add_metrics("run-a", 0, {"reward.total": 0.5, "policy.r_align": -0.2})
    store.add_metrics("run-a", 1, {"reward.total": 0.7, "policy.r_align": -0.1})
    store.set_status("run-a", "finished")

    assert [m["epoch"] for m in store.metrics("run-a")] == [0, 1]
    assert store.metrics("run-a")[1]["reward.total"] == 0.7
    runs = {r.run_id: r for r in store.list_runs()}
    assert set(runs) == {"run-a", "run-b"}
    assert runs["run-a"].status == "finished"
    assert runs["run-a"].epoch == 1
    assert runs["run-a"].latest["reward.total"] == 0.7
    assert runs["run-b"].status == "running" and runs["run-b"].latest == {}
    assert runs["run-a"].out_dir == "/tmp/a"


def test_list_is_newest_first_and_resume_keeps_start(store):
    store.register("old")
    store.register("new")
    first = store.get("old").started
    store.register("old")  # resume
    assert store.get("old").started == first
    assert store.list_runs()[0].run_id == "new"


def test_unknown_status_is_rejected(store):
    store.register("x")
    with pytest.raises(ValueError, match="unknown run status"):
        store.set_status("x", "exploded")


def test_connect_unreachable_returns_none_and_says_so(caplog):
    caplog.set_level(logging.WARNING)
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert connect(url, timeout_s=0.5) is None
    assert "unreachable" in caplog.text and "uncached" in caplog.text


def test_connect_without_url_says_so(caplog):
    caplog.set_level(logging.WARNING)
    assert connect(None) is None
    assert "no Redis configured" in caplog.text


def test_connect_reachable(redis_url):
    client = connect(redis_url)
    assert client is not None and client.ping()
