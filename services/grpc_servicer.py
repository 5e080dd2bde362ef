"""The gRPC side of the deployments: bearer-token check and status codes.

Ray Serve's gRPC proxy calls the ingress deployment's method named after the RPC
with the request message and a ``grpc_context``. Each such method delegates to
``handle_rpc``, which checks the token, runs the pure work and maps errors:
``ValueError`` (bad input, including request bytes that are not the RPC's message)
-> INVALID_ARGUMENT with its message, a missing or wrong token -> UNAUTHENTICATED,
a model deployment over its ``max_queued_requests`` -> RESOURCE_EXHAUSTED, a model
replica that died mid-call or no replica to call -> UNAVAILABLE (both retryable),
anything else -> INTERNAL (logged, the replica keeps serving).

``add_reward_service`` / ``add_model_service`` (``grpc_servicer_functions`` in the
serve config) register the RPCs with the proxy WITHOUT a request deserializer: the
proxy forwards the request bytes and the deployment parses them (``parse``), so
bytes that are not a valid message get INVALID_ARGUMENT instead of the UNKNOWN that
a failed deserialization inside the proxy would give.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from cxrl.reward.v1 import reward_pb2 as pb
from services.metrics import OFF, ServiceMetrics, Timer, reason_of, status_of

log = logging.getLogger(__name__)

TOKEN_ENV = "CXRL_API_TOKEN"
SERVICER_FUNCTIONS: tuple[str, ...] = (
    "services.grpc_servicer.add_reward_service",
    "services.grpc_servicer.add_model_service",
)
M = TypeVar("M")
# service -> method -> (request type, response type), as in protos/cxrl/reward/v1/reward.proto
SERVICES: dict[str, dict[str, tuple[type[Message], type[Message]]]] = {
    "cxrl.reward.v1.RewardService": {
        "Score": (pb.ScoreRequest, pb.ScoreResponse),
        "Info": (pb.InfoRequest, pb.InfoResponse),
    },
    "cxrl.reward.v1.ModelService": {
        "Predict": (pb.PredictRequest, pb.PredictResponse),
        "Info": (pb.InfoRequest, pb.InfoResponse),
    },
}


def _add_service(name: str, servicer, server) -> None:
    """Register one service's unary RPCs; requests reach ``servicer`` as bytes (see ``parse``)."""
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method), request_deserializer=None, response_serializer=resp.SerializeToString
        )
        for method, (_, resp) in SERVICES[name].items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(name, handlers)


def add_reward_service(servicer, server) -> None:
    """``RewardService`` (the gateway) for Ray Serve's gRPC proxy or a plain ``grpc`` server."""
    _add_service("cxrl.reward.v1.RewardService", servicer, server)


def add_model_service(servicer, server) -> None:
    """``ModelService`` (one reward model per application)."""
    _add_service("cxrl.reward.v1.ModelService", servicer, server)


def parse(message_type: type[M], request) -> M:
    """The request as a ``message_type``: bytes from the proxy are parsed here (ValueError if invalid)."""
    if isinstance(request, message_type):
        return request
    if not isinstance(request, bytes | bytearray | memoryview):
        raise ValueError(f"expected a {message_type.DESCRIPTOR.full_name}, got {type(request).__name__}")
    try:
        return message_type.FromString(bytes(request))
    except DecodeError as exc:
        raise ValueError(
            f"request bytes are not a valid {message_type.DESCRIPTOR.full_name} message ({exc}); "
            "serialize the request with the stubs generated from protos/cxrl/reward/v1/reward.proto"
        ) from None


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


async def handle_rpc(
    grpc_context,
    token: str,
    work: Callable[[], Awaitable[M]],
    empty: M,
    metrics: ServiceMetrics = OFF,
    method: str = "",
) -> M:
    """Run ``work`` for one RPC; on failure set the status on ``grpc_context`` and return ``empty``.
    The outcome (status, refusal reason, seconds) is recorded in ``metrics`` under ``method``."""
    timer = Timer()
    code, error = None, None
    try:
        return await _run_rpc(grpc_context, token, work, empty)
    except _Failed as failed:
        code, error = failed.code, failed.exc
        _fail(grpc_context, code, failed.details)
        return empty
    finally:
        status = status_of(code)
        metrics.request(method, "grpc", status, timer.seconds, reason_of(error, status))


class _Failed(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, exc: BaseException | None = None):
        self.code, self.details, self.exc = code, details, exc


async def _run_rpc(grpc_context, token: str, work: Callable[[], Awaitable[M]], empty: M) -> M:
    metadata = dict(grpc_context.invocation_metadata()) if grpc_context is not None else {}
    if not authorized(metadata.get("authorization"), token):
        raise _Failed(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
    try:
        return await work()
    except ValueError as exc:
        raise _Failed(grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc) from None
    except Exception as exc:  # the replica must keep serving
        code = transient_status(exc)
        if code is None:
            log.exception("internal error while serving an RPC")
            details = f"internal error: {type(exc).__name__}: {exc}"
            raise _Failed(grpc.StatusCode.INTERNAL, details, exc) from None
        log.warning("reward model call failed, the caller may retry: %s: %s", type(exc).__name__, exc)
        raise _Failed(code, f"{_TRANSIENT_HINT[code]}: {type(exc).__name__}: {exc}", exc) from None


_TRANSIENT_HINT = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "a reward model is over its request queue limit; retry with backoff",
    grpc.StatusCode.UNAVAILABLE: "a reward model replica is restarting or unreachable; retry with backoff",
}


def transient_status(exc: BaseException) -> grpc.StatusCode | None:
    """RESOURCE_EXHAUSTED / UNAVAILABLE for failures of a model deployment that a retry can fix, else None."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    for _ in range(8):  # Serve wraps an upstream actor's death in a RayServeException (its __cause__)
        if isinstance(exc, BackPressureError):
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        if isinstance(exc, RayActorError | DeploymentUnavailableError):
            return grpc.StatusCode.UNAVAILABLE
        if exc.__cause__ is None:
            break
        exc = exc.__cause__
    return None


def _fail(grpc_context, code: grpc.StatusCode, details: str) -> None:
    if grpc_context is None:
        raise ValueError(details)
    grpc_context.set_code(code)
    grpc_context.set_details(details[:4000])
