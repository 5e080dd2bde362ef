"""The reward gateway over real gRPC without Ray: the servicer functions and :class:`services.gateway.Gateway`
on in-process random-weight scorers (``random_scorers(seed)``) behind a plaintext grpc.aio server on a
thread, as RewardGateway serves them inside Ray Serve (tests/test_client_tls.py does the same over TLS).
Starts in well under a second, so a test can score through :class:`cxrl.client.RewardClient` cheaply."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import grpc
from _http_gateway import _Handle

from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.factory import random_scorers
from services.gateway import Gateway, GatewayArgs
from services.grpc_servicer import add_reward_service, handle_rpc, parse


class _Servicer:
    """RewardService over services.gateway.Gateway (no bearer token)."""

    def __init__(self, seed: int):
        kinds = ("posture", "diagnostic", "consistency")
        handles = {k: _Handle(k, s) for k, s in zip(kinds, random_scorers(seed), strict=True)}
        self.gateway = Gateway(GatewayArgs(), handles.__getitem__)

    async def Score(self, request, context):
        work = lambda: self.gateway.score_message(parse(pb.ScoreRequest, request))  # noqa: E731
        return await handle_rpc(context, "", work, pb.ScoreResponse())

    async def Info(self, request, context):
        return await handle_rpc(context, "", self.gateway.info_message, pb.InfoResponse())


@contextlib.contextmanager
def grpc_gateway(seed: int = 0) -> Iterator[str]:
    """``grpc://127.0.0.1:PORT`` of a gateway on ``random_scorers(seed)`` until the block ends."""
    ready, box = threading.Event(), {}

    async def main() -> None:
        server = grpc.aio.server()
        add_reward_service(_Servicer(seed), server)
        box["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await box["stop"].wait()
        await server.stop(None)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("the test gRPC gateway did not start in 60 s")
    try:
        yield f"grpc://127.0.0.1:{box['port']}"
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the test gRPC gateway's thread did not end"
