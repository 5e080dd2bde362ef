"""cxrl.infra.serve_process: the one `cxrl serve` launcher (the full start is exercised by the service tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    # tokens on by default: a fresh API token for the clients, Ray's token auth left on
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("CXRL_API_TOKEN", raising=False)
    a, b = ServeProcess(tmp_path / "c.yaml"), ServeProcess(tmp_path / "c.yaml")
    assert len(a.token) >= 32 and a.token != b.token and a.env["CXRL_API_TOKEN"] == a.token
    assert "RAY_AUTH_MODE" not in a.env and "CXRL_ALLOW_UNAUTHENTICATED" not in a.env
    assert ServeProcess(tmp_path / "c.yaml", env={"CXRL_API_TOKEN": "given"}).token == "given"
    open_ = ServeProcess(tmp_path / "c.yaml", token="t", allow_unauthenticated=True)
    assert open_.token == "" and "CXRL_API_TOKEN" not in open_.env
    assert open_.env["CXRL_ALLOW_UNAUTHENTICATED"] == "1" and open_.env["RAY_AUTH_MODE"] == "disabled"
    assert ServeProcess(tmp_path / "c.yaml", env={"CXRL_ALLOW_UNAUTHENTICATED": "1"}).token == ""


FAKE_SERVE = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGINT, lambda *_: (print("cxrl serve: stopped", flush=True), sys.exit(0)))
    print("cxrl serve: gRPC on 127.0.0.1:" + sys.argv[1], flush=True)
    time.sleep(0.5)
    print("cxrl serve: ready (Ctrl-C or SIGTERM to stop)", flush=True)
    time.sleep(120)
    """
)


class FakeServe(ServeProcess):
    """The launcher around a stand-in for `cxrl serve` that prints its lines and stops on SIGINT."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", FAKE_SERVE, str(self.grpc_port)]


class FailingServe(ServeProcess):
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "import sys; print('ERROR serve config not found: c.yaml'); sys.exit(2)",
        ]


def test_a_command_that_exits_early_raises_with_its_log(tmp_path):
    serve = FailingServe(tmp_path / "c.yaml", tmp_path / "serve.log")
    with pytest.raises(ServeStartError, match="exited with code 2 before it was ready") as err:
        serve.start()
    assert "serve config not found" in str(err.value)  # the log's tail travels with the error
    assert serve.proc is None and serve.returncode == 2 and not serve.stopped_cleanly


def test_start_waits_for_ready_and_stop_is_clean(tmp_path):
    with FakeServe(tmp_path / "c.yaml", tmp_path / "serve.log") as serve:
        assert "cxrl serve: ready" in serve.log_text()  # start() returned only once it said so
        assert serve.processes() == [serve.proc.pid]
    assert serve.returncode == 0 and serve.left == [] and serve.stopped_cleanly
    assert serve.log_text().splitlines()[-1] == "cxrl serve: stopped"


def test_the_service_dies_with_a_killed_launcher(tmp_path):
    launcher = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_infra_serve_process import FakeServe
        serve = FakeServe("c.yaml", {str(tmp_path / "serve.log")!r}).start()
        print(serve.proc.pid, serve.marker, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    pid, marker = parent.stdout.readline().split()
    assert processes_with(marker) == [int(pid)]
    parent.kill()  # SIGKILL: no stop(), no finally
    parent.wait()
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []


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
