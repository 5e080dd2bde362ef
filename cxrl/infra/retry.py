"""Bounded retries of reward calls: a reward replica restarting mid-run costs a retry, not the run.

Transient failures (the service unavailable, a deadline passed, a dropped connection) are retried
with exponential backoff, at most ``retries`` times; errors that would fail again the same way
(bad input, bad credentials, unknown method) are raised at once.
"""

from __future__ import annotations

import logging
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
) -> tuple[T, int]:
    """Run ``fn``; on a transient error wait and repeat (at most ``retries`` times).

    Returns (result, retries used). The last error is raised when retries run out.
    """
    attempt = 0
    while True:
        try:
            return fn(), attempt
        except Exception as exc:
            if not is_transient(exc) or attempt >= retries:
                if attempt:
                    log.error("%s failed after %d retries: %s", what, attempt, exc)
                raise
            delay = backoff_s * (2**attempt)
            attempt += 1
            log.warning(
                "%s failed (%s: %s); retry %d/%d in %.1f s",
                what,
                type(exc).__name__,
                exc,
                attempt,
                retries,
                delay,
            )
            sleep(delay)
