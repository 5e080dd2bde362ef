"""cxrl.infra.redis_guard: Redis failures become fallbacks, an outage is logged once, Redis is retried."""

from __future__ import annotations

import logging

import pytest
import redis
import torch

from cxrl.infra.ports import free_port
from cxrl.infra.redis_guard import RedisGuard
from cxrl.infra.redis_local import LocalRedis
from cxrl.rewards.types import Components
from trainer.anchor_cache import AnchorCache
from trainer.store import RunStore


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _refused():
    raise redis.ConnectionError("Connection refused")


def test_outage_is_logged_once_skipped_until_retry_and_recovery_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="cxrl.infra.redis_guard")
    clock = Clock()
    guard = RedisGuard(redis.Redis(), "redis://test", retry_s=5.0, clock=clock)
    assert guard.call("read", lambda: "value", "fallback") == "value" and guard.up

    tried = []

    def failing():
        tried.append(clock.t)
        _refused()

    assert guard.call("anchor cache read", failing, "miss") == "miss"
    assert not guard.up and guard.outages == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "redis://test is unreachable" in warnings[0].message and "uncached" in warnings[0].message
    # within retry_s: answered with the fallback without touching Redis
    clock.t += 4.9
    assert guard.call("write", failing, None) is None
    assert tried == [100.0] and guard.skipped == 1
    # due again: tried, fails again, still one outage and one warning
    clock.t += 0.2
    assert guard.call("write", failing, None) is None
    assert len(tried) == 2 and guard.outages == 1 and guard.failures == 2
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    # back: the next due call succeeds and says so
    clock.t += 5.0
    assert guard.call("read", lambda: "value", "miss") == "value" and guard.up
    assert "is back after 10.1 s" in caplog.text  # down since the first failure
    # a second outage is counted and logged again
    guard.call("read", _refused, None)
    assert guard.outages == 2 and sum(r.levelno == logging.WARNING for r in caplog.records) == 2


def test_messages_say_what_this_user_of_redis_loses_and_gets_back(caplog):
    caplog.set_level(logging.INFO, logger="cxrl.infra.redis_guard")
    clock = Clock()
    guard = RedisGuard(
        redis.Redis(), "redis://c", 1.0, clock, purpose="score cache", impact="scoring uncached"
    )
    guard.call("score cache read", _refused, None)
    clock.t += 2.5
    guard.call("score cache read", lambda: 1, None)
    assert [r.getMessage() for r in caplog.records] == [
        "Redis at redis://c is unreachable (ConnectionError during score cache read): scoring uncached; "
        "retrying every 1 s",
        "Redis at redis://c is back after 2.5 s: score cache resumed",
    ]


def test_non_redis_errors_are_not_swallowed():
    guard = RedisGuard(redis.Redis(), retry_s=0)

    def bug():
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        guard.call("read", bug, None)
    with pytest.raises(ValueError, match="retry_s"):
        RedisGuard(redis.Redis(), retry_s=-1)


def test_open_without_url_or_with_bad_url_gives_no_guard(caplog):
    caplog.set_level(logging.WARNING)
    assert RedisGuard.open(None) is None
    assert "no Redis configured" in caplog.text
    assert RedisGuard.open("http://not-redis:1") is None
    assert "not valid" in caplog.text


def _images(n: int) -> torch.Tensor:
    return torch.linspace(0, 1, n * 16 * 16).reshape(n, 1, 16, 16)  # [n, 1, 16, 16]


def test_cache_and_store_survive_a_restart_at_the_same_address(caplog):
    caplog.set_level(logging.INFO, logger="cxrl.infra.redis_guard")
    port = free_port()
    first, second = LocalRedis(port=port), LocalRedis(port=port)
    url = first.start()
    try:
        guard = RedisGuard.open(url, retry_s=0)
        assert guard is not None and guard.up
        cache = AnchorCache(guard.client, "v1", prefix="g", guard=guard)
        store = RunStore(guard.client, prefix="g", guard=guard)
        store.register("run", out_dir="/tmp/run")
        reports, seeds = ["effusion.", "normal."], [1, 2]
        comps = Components(r_align=torch.tensor([-0.1, -0.2]))
        cache.put_many(reports, seeds, _images(2), comps)
        assert all(e is not None for e in cache.get_many(reports, seeds))
        assert store.add_metrics("run", 0, {"x": 0.0}) is not None

        first.stop()  # Redis goes away mid-run
        assert cache.get_many(reports, seeds) == [None, None]  # a miss, not an error
        cache.put_many(reports, seeds, _images(2), comps)  # dropped, not an error
        assert store.add_metrics("run", 1, {"x": 1.0}) is None
        assert store.add_metrics("run", 2, {"x": 2.0}) is None
        store.set_status("run", "running")
        assert store.unsent == 2 and not guard.up
        assert (cache.hits, cache.misses) == (2, 2)
        assert "unreachable" in caplog.text

        second.start()  # back at the same address, empty (no persistence)
        assert cache.get_many(reports, seeds) == [None, None]  # reachable again, but empty
        assert guard.up and "is back" in caplog.text
        cache.put_many(reports, seeds, _images(2), comps)
        assert all(e is not None for e in cache.get_many(reports, seeds))
        # the epochs written during the outage go out first, in order, and the run is registered again
        assert store.add_metrics("run", 3, {"x": 3.0}) is not None
        assert store.unsent == 0
        assert [m["epoch"] for m in store.metrics("run")] == [1, 2, 3]
        info = store.get("run")
        assert info.status == "running" and info.epoch == 3
        assert [r.run_id for r in store.list_runs()] == ["run"]
    finally:
        first.stop()
        second.stop()


def test_unreachable_at_start_is_picked_up_later(caplog):
    caplog.set_level(logging.INFO, logger="cxrl.infra.redis_guard")
    port = free_port()
    guard = RedisGuard.open(f"redis://127.0.0.1:{port}/0", retry_s=0, timeout_s=0.5)
    assert guard is not None and not guard.up
    cache = AnchorCache(guard.client, "v1", prefix="late", guard=guard)
    assert cache.get_many(["a."], [1]) == [None]
    with LocalRedis(port=port):
        cache.put_many(["a."], [1], _images(1), Components(r_align=torch.tensor([0.5])))
        (entry,) = cache.get_many(["a."], [1])
        assert entry is not None and entry.components == {"r_align": 0.5}
        assert guard.up and "is back" in caplog.text
