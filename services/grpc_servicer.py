"""The gRPC side of the deployments: bearer-token check and status codes.

Ray Serve's gRPC proxy calls the ingress deployment's method named after the RPC
with the request message and a ``grpc_context``. Each such method delegates to
``handle_rpc``, which checks the token, runs the pure work and maps errors:
``ValueError`` (bad input) -> INVALID_ARGUMENT with its message, a missing or
wrong token -> UNAUTHENTICATED, anything else -> INTERNAL (logged, the replica
keeps serving). The same servicer functions are registered with the proxy
(``grpc_servicer_functions`` in the serve config).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

log = logging.getLogger(__name__)

TOKEN_ENV = "CXRL_API_TOKEN"
SERVICER_FUNCTIONS: tuple[str, ...] = (
    "cxrl.reward.v1.reward_pb2_grpc.add_RewardServiceServicer_to_server",
    "cxrl.reward.v1.reward_pb2_grpc.add_ModelServiceServicer_to_server",
)
M = TypeVar("M")


def server_token() -> str:
    """The bearer token calls must carry ('' = no auth), read from ``CXRL_API_TOKEN``."""
    return os.environ.get(TOKEN_ENV, "")


def authorized(authorization: str | None, token: str) -> bool:
    """True when no token is configured or ``authorization`` is ``Bearer <token>``."""
    if not token:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


UNAUTHENTICATED_MESSAGE = (
    "missing or wrong bearer token: send the header/metadata 'authorization: Bearer <token>'"
)


async def handle_rpc(grpc_context, token: str, work: Callable[[], Awaitable[M]], empty: M) -> M:
    """Run ``work`` for one RPC; on failure set the status on ``grpc_context`` and return ``empty``."""
    metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
    if not authorized(metadata.get("authorization"), token):
        _fail(grpc_context, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        return empty
    try:
        return await work()
    except ValueError as exc:
        _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except Exception as exc:  # the replica must keep serving
        log.exception("internal error while serving an RPC")
        _fail(grpc_context, grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    return empty


def _fail(grpc_context, code: grpc.StatusCode, details: str) -> None:
    if grpc_context is None:
        raise ValueError(details)
    grpc_context.set_code(code)
    grpc_context.set_details(details[:4000])
