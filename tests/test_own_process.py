"""`own_process` tests (tests/conftest.py) run in a child pytest, and what happens there is what
the session reports: a pass, a failure with its message, a crash at the child's exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHILD_REPORTS

HERE = Path(__file__).resolve().parent

CASES = """
import atexit, os, signal
import pytest

@pytest.mark.own_process
def test_passes():
    assert os.environ.get("CXRL_TEST_CHILD_REPORTS")

@pytest.mark.own_process
def test_fails():
    assert 1 == 2, "the child's own message"

def test_in_the_parent():
    assert not os.environ.get("CXRL_TEST_CHILD_REPORTS")
"""

CRASH = """
import atexit, os, signal
import pytest

@pytest.mark.own_process
def test_passes_then_the_process_crashes_at_exit():
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGSEGV))
"""

# a module whose last test runs in a child after one that ran here, then another module
MIXED = """
import pytest

@pytest.fixture(scope="module")
def here():
    return 1

def test_here_first(here):
    assert here == 1

@pytest.mark.own_process
def test_then_in_a_child():
    pass
"""

NEXT = """
def test_in_the_next_module():
    pass
"""


@pytest.mark.own_process
def test_an_own_process_test_runs_in_a_child_pytest():
    assert os.environ.get(CHILD_REPORTS)  # set only in the child


def _session(tmp_path: Path, text: str, then: str | None = None) -> subprocess.CompletedProcess:
    shutil.copy2(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(text)
    if then is not None:
        (tmp_path / "test_then.py").write_text(then)
    env = {k: v for k, v in os.environ.items() if k != CHILD_REPORTS}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_session_reports_what_the_child_ran(tmp_path):
    result = _session(tmp_path, CASES)
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "FAILED test_cases.py::test_fails" in out and "the child's own message" in out, out
    assert "PASSED test_cases.py::test_passes" in out and "PASSED test_cases.py::test_in_the_parent" in out


def test_a_crash_at_the_childs_exit_fails_its_tests(tmp_path):
    result = _session(tmp_path, CRASH)
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 passed, 1 error" in out, out  # the call passed; the teardown carries the crash
    assert f"exit status {-11}" in out, out


def test_the_next_module_sets_up_after_a_child_ran_a_modules_last_test(tmp_path):
    result = _session(tmp_path, MIXED, then=NEXT)
    out = result.stdout
    assert result.returncode == 0, out
    assert "3 passed" in out and "error" not in out.lower(), out
    assert "PASSED test_then.py::test_in_the_next_module" in out, out
