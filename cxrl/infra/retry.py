"""Bounded retries of reward calls: a reward replica restarting mid-run costs a retry, not the run.

Transient failures (the service unavailable, a deadline passed, a dropped connection) are retried
with exponential backoff, at most ``retries`` times; errors that would fail again the same way
(bad input, bad credentials, unknown method) are raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# gRPC status names that mean "try again" (grpc.StatusCode.<name>.name)
TRANSIENT_GRPC = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN", "INTERNAL", "CANCELLED"}
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed reward call may succeed when repeated."""
    status = getattr(exc, "code", None)  # grpc.RpcError: a method; cxrl.client.RewardServiceError: a value
    if callable(status):
        try:
            status = status()
        except Exception:  # a code() that needs arguments is not a gRPC status
            status = None
    name = getattr(status, "name", None)
    if isinstance(name, str):
        return name in TRANSIENT_GRPC
    if getattr(exc, "transient", None) is not None:
        return bool(exc.transient)
    return isinstance(exc, ConnectionError | TimeoutError)


def call_with_retries(
    fn: Callable[[], T],
    retries: int,
    backoff_s: float,
    what: str = "reward call",
    sleep: Callable[[float], None] = time.sleep,
    transient: Callable[[BaseException], bool] = is_transient,  # which failures are worth repeating
    jitter: float = 0.0,  # each wait is stretched by a random share in [0, jitter) (clients apart)
    on_retry: Callable[[BaseException], None] | None = None,  # called before each retry (counting)
) -> tuple[T, int]:
    """Run ``fn``; on a transient error wait ``backoff_s * 2**attempt`` and repeat (at most
    ``retries`` times).

    Returns (result, retries used). The last error is raised when retries run out.
    """
    attempt = 0
    while True:
        try:
            return fn(), attempt
        except Exception as exc:
            if not transient(exc) or attempt >= retries:
                if attempt:
                    log.error("%s failed after %d retries: %s", what, attempt, exc)
                raise
            delay = backoff_s * (2**attempt) * (1 + random.random() * jitter)
            attempt += 1
            if on_retry is not None:
                on_retry(exc)
            log.warning(
                "%s failed (%s: %s); retry %d/%d in %.1f s",
                what,
                type(exc).__name__,
                _brief(exc),
                attempt,
                retries,
                delay,
            )
            sleep(delay)


def _brief(exc: BaseException) -> str:
    """A gRPC error's status and details (its str() is a multi-line dump), or the error's message."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{code().name}: {details()}"
        except Exception:  # not a gRPC call error after all
            pass
    return str(exc)
