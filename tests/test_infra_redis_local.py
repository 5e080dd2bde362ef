"""cxrl.infra.redis_local: a private redis-server on a free loopback port, stopped on exit."""

from __future__ import annotations

import pytest
import redis

from cxrl.infra.ports import free_port
from cxrl.infra.redis_local import LocalRedis, redis_server_binary


def test_binary_is_the_environments_redis_server():
    path = redis_server_binary()
    assert path.name == "redis-server" and path.is_file()


def test_starts_answers_and_stops():
    local = LocalRedis()
    with local as url:
        assert url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.set("k", b"v")
        assert client.get("k") == b"v"
        assert local.running
        client.close()
    assert not local.running
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_two_servers_get_different_ports():
    with LocalRedis() as a, LocalRedis() as b:
        assert a != b


def test_stops_on_error_inside_the_block():
    local = LocalRedis()
    with pytest.raises(KeyError):
        with local:
            raise KeyError("boom")
    assert not local.running


def test_bad_binary_is_reported(tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'not redis' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="exited with code 3"):
        LocalRedis(binary=fake, attempts=1).start()


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_the_redis_server_dies_with_a_sigkilled_parent(tmp_path):
    """`cxrl demo` killed by SIGKILL (a time limit) must not leave its private redis-server behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from cxrl.infra.redis_local import LocalRedis\n"
        "local = LocalRedis()\n"
        "local.start()\n"
        "print(local._proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # the server runs
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as fh:  # a zombie awaiting its reaper counts as gone
                if fh.read().split(") ")[1].startswith("Z"):
                    break
            time.sleep(0.05)
        else:
            raise AssertionError(f"redis-server {child} outlived its SIGKILLed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
