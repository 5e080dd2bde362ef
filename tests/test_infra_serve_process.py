"""cxrl.infra.serve_process: the one `cxrl serve` launcher (the full start is exercised by the service tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cxrl.infra.serve_process import MARKER_ENV, ServeProcess, ServeStartError, processes_with


def test_command_env_and_addresses(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/0")
    serve = ServeProcess(
        tmp_path / "c.yaml", tmp_path / "s.log", num_cpus=2, nice=10, env={"REDIS_URL": None, "X": "1"}
    )
    cmd = serve.command()
    assert cmd[:4] == ["nice", "-n", "10", sys.executable]
    assert cmd[4:8] == ["-m", "cxrl.cli", "serve", "--config"]
    assert cmd[cmd.index("--grpc-port") + 1] == str(serve.grpc_port)
    assert cmd[cmd.index("--num-cpus") + 1] == "2"
    assert serve.grpc_port != serve.http_port
    assert "REDIS_URL" not in serve.env and serve.env["X"] == "1"
    assert f"{MARKER_ENV}={serve.env[MARKER_ENV]}" == serve.marker
    assert serve.url == f"grpc://127.0.0.1:{serve.grpc_port}"
    assert serve.http_url == f"http://127.0.0.1:{serve.http_port}"


def test_a_command_that_exits_early_raises_with_its_log(tmp_path):
    serve = ServeProcess(tmp_path / "missing.yaml", tmp_path / "serve.log")
    with pytest.raises(ServeStartError, match="exited with code 2 before it was ready") as err:
        serve.start()
    assert "serve config not found" in str(err.value)  # the log's tail travels with the error
    assert serve.proc is None and serve.returncode == 2 and not serve.stopped_cleanly


def _stubborn(env: dict[str, str]) -> subprocess.Popen:
    """A process that ignores SIGINT and leaves a marked grandchild behind, like a wedged Ray head."""
    code = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print("started", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    return proc


def test_stop_kills_what_ignores_sigint_and_what_is_left_behind(tmp_path):
    serve = ServeProcess(tmp_path / "c.yaml", tmp_path / "serve.log")
    serve.proc = _stubborn(serve.env)
    deadline = time.monotonic() + 10
    while len(serve.processes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    child, grandchild = sorted(serve.processes())
    assert child == serve.proc.pid
    assert processes_with(f"{MARKER_ENV}=other") == []

    assert serve.stop(timeout_s=1, linger_s=0.5) == -signal.SIGKILL
    assert serve.left == [grandchild] and not serve.stopped_cleanly
    deadline = time.monotonic() + 5
    while serve.processes() and time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
        time.sleep(0.05)
    assert serve.processes() == []
