"""`cxrl serve` as a child process: started on loopback ports, waited for, stopped with all it started.

The one launcher of the reward services for ``cxrl demo``, the benchmarks and the tests. Every
process of one instance (the command, Ray's head processes, the Serve replicas) carries a unique
marker in its environment (``CXRL_SERVE_MARKER=<uuid>``), so a caller can measure their memory or
find a replica to kill, and :meth:`ServeProcess.stop` can check that nothing was left behind.

    with ServeProcess(config, log_path) as serve:   # ready on return
        RewardClient(serve.grpc_target, token=serve.token).score(...)
    assert serve.stopped_cleanly, serve.log_tail()

`cxrl serve` refuses to listen without tokens (its gRPC proxy binds every interface): the launcher
gives it an API token (``token``, else ``CXRL_API_TOKEN``, else a fresh one; clients send
``serve.token``) and leaves Ray's token auth on; ``allow_unauthenticated`` opts out of both.

The command's output goes to ``log_path`` (a temporary file when not given); readiness is its
``cxrl serve: ready`` line. Stopping sends SIGINT (``cxrl serve`` shuts Serve and Ray down), waits,
then SIGKILLs the command and whatever of its processes outlives it. If the launching process dies
first, even by SIGKILL, the kernel kills the command (:func:`cxrl.infra.procs.die_with_parent`),
and ``cxrl serve`` takes its Ray processes with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from cxrl.infra.ports import free_port
from cxrl.infra.procs import descendants, die_with_parent

log = logging.getLogger(__name__)

READY_LINE = "cxrl serve: ready"
STOPPED_LINE = "cxrl serve: stopped"
MARKER_ENV = "CXRL_SERVE_MARKER"
TOKEN_ENV = "CXRL_API_TOKEN"  # the reward API's bearer token, read by `cxrl serve` and the client
ALLOW_ENV = "CXRL_ALLOW_UNAUTHENTICATED"  # `cxrl serve` runs without tokens only with this set
RAY_AUTH_ENV = "RAY_AUTH_MODE"


class ServeStartError(RuntimeError):
    """`cxrl serve` exited or did not get ready in time; the message ends with its log's tail."""


class ServeProcess:
    """One `cxrl serve` child process on ``host`` (free ports unless given)."""

    def __init__(
        self,
        config: str | Path,
        log_path: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        num_cpus: float | None = None,  # CPUs the service's Ray head offers (None: all)
        env: Mapping[str, str | None] | None = None,  # over os.environ; None unsets a variable
        nice: int = 0,  # niceness of the service's processes (tests: 10, to keep the runner responsive)
        ready_timeout_s: float = 600.0,  # for the applications to run (the command's --ready-timeout)
        token: str | None = None,  # the reward API's bearer token (None: CXRL_API_TOKEN, else a fresh one)
        allow_unauthenticated: bool = False,  # no API token, no Ray token auth (an unreachable machine)
        metrics_port: int | None = None,  # Ray's Prometheus exporter, on 127.0.0.1 (None: a free port)
    ):
        self.config = Path(config)
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.metrics_port = metrics_port or free_port("127.0.0.1")
        self.num_cpus = num_cpus
        self.nice = nice
        self.ready_timeout_s = ready_timeout_s
        self.marker = f"{MARKER_ENV}={uuid.uuid4().hex}"
        self._tmp: tempfile.TemporaryDirectory | None = None
        if log_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cxrl-serve-")
            log_path = Path(self._tmp.name) / "serve.log"
        self.log_path = Path(log_path)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = value
        if allow_unauthenticated or self.env.get(ALLOW_ENV) == "1":  # `cxrl serve` runs open only if told
            self.token = ""
            self.env.update({ALLOW_ENV: "1", RAY_AUTH_ENV: "disabled"})
            self.env.pop(TOKEN_ENV, None)
        else:  # the API token clients must send; Ray's token auth with a fresh token made by `cxrl serve`
            self.token = token or self.env.get(TOKEN_ENV) or secrets.token_urlsafe(32)
            self.env[TOKEN_ENV] = self.token
            if self.env.get(RAY_AUTH_ENV, "token").lower() != "token":
                self.env.pop(RAY_AUTH_ENV)  # e.g. the Makefile's RAY_AUTH_MODE=disabled
        self.env[MARKER_ENV] = self.marker.split("=", 1)[1]
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.left: list[int] = []  # processes that outlived the command and were killed

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def url(self) -> str:
        """The reward backend URL the trainer takes (``grpc://host:port``)."""
        return f"grpc://{self.grpc_target}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Ray's Prometheus exporter: the services' and Ray's metrics (loopback only)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        cmd = ["nice", "-n", str(self.nice)] if self.nice else []
        cmd += [sys.executable, "-m", "cxrl.cli", "serve", "--config", str(self.config), "--host", self.host]
        cmd += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        cmd += ["--ready-timeout", str(self.ready_timeout_s), "--metrics-port", str(self.metrics_port)]
        if self.num_cpus:
            cmd += ["--num-cpus", str(self.num_cpus)]
        return cmd

    def start(self) -> ServeProcess:
        """Start the command and wait until every application runs; raises ServeStartError."""
        if self.proc is not None:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log_fh:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches us; we stop it (and Ray) ourselves
                preexec_fn=die_with_parent,  # if we are killed, so is it (and its FateShare takes Ray)
            )
        log.info("started `cxrl serve` (pid %d), log in %s", self.proc.pid, self.log_path)
        try:
            self._wait_ready(self.ready_timeout_s + 30)
        except BaseException:
            self.stop()
            raise
        for line in self.log_text().splitlines():
            if line.startswith("cxrl serve:"):
                log.info("%s", line)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self.log_text():
            if self.proc.poll() is not None:
                raise ServeStartError(
                    f"`cxrl serve` exited with code {self.proc.returncode} before it was ready:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServeStartError(f"`cxrl serve` not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def processes(self) -> list[int]:
        """Live processes of this instance (the command, Ray's processes, the replicas): those that
        carry the marker, and their descendants (Ray's agents set their process titles over their
        environment block, so the dashboard agent that serves the metrics exporter carries no
        readable marker; it is the raylet's child)."""
        found = set(processes_with(self.marker))
        if self.proc is not None and self.proc.poll() is None:
            found.add(self.proc.pid)
        for pid in list(found):
            found.update(descendants(pid))
        return sorted(found)

    def stop(self, timeout_s: float = 180.0, linger_s: float = 30.0) -> int | None:
        """SIGINT, wait ``timeout_s``, then SIGKILL; processes still there after ``linger_s`` are killed
        (and listed in ``left``). Returns the command's exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("`cxrl serve` did not stop in %.0f s; killing it", timeout_s)
                self.proc.kill()
        self.returncode = self.proc.wait()
        deadline = time.monotonic() + linger_s
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # never leave Ray behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.left = left
        self.proc = None
        log.info("`cxrl serve` stopped (exit code %s)", self.returncode)
        return self.returncode

    @property
    def stopped_cleanly(self) -> bool:
        """Exit code 0, Serve and Ray shut down, no process left behind."""
        return self.returncode == 0 and STOPPED_LINE in self.log_text() and not self.left

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 5000) -> str:
        return self.log_text()[-chars:]

    def close(self) -> None:
        """Stop, and remove the temporary log directory if there is one."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds ``marker`` (``NAME=value``), from /proc."""
    needle = marker.encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes() + b"\0":
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found
