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
