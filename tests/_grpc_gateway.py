"""The reward gateway over real gRPC without Ray: the servicer functions and :class:`services.gateway.Gateway`
on in-process random-weight scorers (``random_scorers(seed)``) behind a grpc.aio server on a thread
(plaintext, or TLS with the server credentials given: tests/test_client_tls.py), as RewardGateway serves
them inside Ray Serve. Starts in well under a second, so a test can score through
:class:`cxrl.client.RewardClient` cheaply."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import grpc
from _http_gateway import _Handle

from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.factory import KINDS, random_scorers
from services.gateway import Gateway, GatewayArgs
from services.grpc_servicer import add_reward_service, handle_rpc, parse


class _Servicer:
    """RewardService over services.gateway.Gateway (``token``: the bearer token it requires; "" none)."""

    def __init__(self, seed: int, token: str = ""):
        handles = {k: _Handle(k, s) for k, s in zip(KINDS, random_scorers(seed), strict=True)}
        self.gateway, self.token = Gateway(GatewayArgs(), handles.__getitem__), token

    async def Score(self, request, context):
        work = lambda: self.gateway.score_message(parse(pb.ScoreRequest, request))  # noqa: E731
        return await handle_rpc(context, self.token, work, pb.ScoreResponse())

    async def Info(self, request, context):
        return await handle_rpc(context, self.token, self.gateway.info_message, pb.InfoResponse())


@contextlib.contextmanager
def grpc_gateway(
    seed: int = 0, token: str = "", credentials: grpc.ServerCredentials | None = None
) -> Iterator[str]:
    """``grpc://127.0.0.1:PORT`` (``grpcs://`` with TLS ``credentials``) of a gateway on
    ``random_scorers(seed)`` requiring ``token`` (if any) until the block ends."""
    ready, box = threading.Event(), {}

    async def main() -> None:
        server = grpc.aio.server()
        add_reward_service(_Servicer(seed, token), server)
        address = "127.0.0.1:0"
        port = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
        box["port"] = port
        await server.start()
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await box["stop"].wait()
        await server.stop(None)

    # asyncio.run closes the loop and its default executor's threads: nothing of it outlives the block
    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("the test gRPC gateway did not start in 60 s")
    try:
        yield f"{'grpcs' if credentials else 'grpc'}://127.0.0.1:{box['port']}"
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the test gRPC gateway's thread did not end"
