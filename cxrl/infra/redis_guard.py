"""Outlive Redis: one shared view of whether Redis answers, and what to do when it does not.

Redis only speeds work up (the trainer's anchor cache, the services' score cache) and reports on it
(metrics stream, run registry), so an outage must not stop a run or a request. Every Redis call
goes through :meth:`RedisGuard.call` with a fallback: a cache read falls back to "not cached", a
cache write or a metrics write to "not written". The first failure logs one warning saying what is
lost (``impact``); while Redis is down, calls return their fallback at once and Redis is tried
again every ``retry_s`` seconds; the first call that succeeds logs that Redis is back, and the
redis-py client opens a new connection by itself (to a restarted server on the same address,
possibly empty).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisGuard:
    """Wraps a client's calls: errors become fallbacks, an outage is logged once, Redis is retried."""

    def __init__(
        self,
        client: redis.Redis,
        url: str = "",
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        purpose: str = "Redis features",
        impact: str = "going on uncached (reads miss, writes are dropped)",
    ):
        if retry_s < 0:
            raise ValueError(f"retry_s must be >= 0 seconds, got {retry_s}")
        self.client = client
        self.url = url or "Redis"
        self.retry_s = retry_s
        self.clock = clock
        self.purpose = purpose  # what Redis serves here, e.g. "score cache"
        self.impact = impact  # what an outage costs, said once when it starts
        self.failures = 0  # calls that failed
        self.skipped = 0  # calls answered with their fallback without trying, while down
        self.outages = 0  # transitions from up to down
        self._down_since: float | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        url: str | None,
        retry_s: float = 5.0,
        timeout_s: float = 2.0,
        purpose: str = "Redis features",
        impact: str = "going on uncached (reads miss, writes are dropped)",
    ) -> RedisGuard | None:
        """A guard on a client for ``url`` (None without a URL). Unreachable now = down, retried later."""
        if not url:
            log.warning("no Redis configured: running without %s", purpose)
            return None
        try:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s * 5,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),  # the guard retries later
            )
        except ValueError as exc:
            log.warning("Redis URL %r is not valid (%s): running without %s", url, exc, purpose)
            return None
        guard = cls(client, url, retry_s, purpose=purpose, impact=impact)
        guard.call("connect", client.ping, False)
        return guard

    @property
    def up(self) -> bool:
        with self._lock:
            return self._down_since is None

    def call(self, what: str, fn: Callable[[], T], fallback: T) -> T:
        """``fn()``, or ``fallback`` when Redis fails now or is known down and not due for a retry."""
        with self._lock:
            if self._down_since is not None and self.clock() < self._next_try:
                self.skipped += 1
                return fallback
        try:
            out = fn()
        except redis.RedisError as exc:
            self._failed(what, exc)
            return fallback
        self._succeeded()
        return out

    def _failed(self, what: str, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            self._next_try = self.clock() + self.retry_s
            first = self._down_since is None
            if first:
                self._down_since = self.clock()
                self.outages += 1
        if first:
            log.warning(
                "Redis at %s is unreachable (%s during %s): %s; retrying every %.0f s",
                self.url,
                type(exc).__name__,
                what,
                self.impact,
                self.retry_s,
            )
        else:
            log.debug("Redis still unreachable (%s during %s)", type(exc).__name__, what)

    def _succeeded(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.info(
                "Redis at %s is back after %.1f s: %s resumed",
                self.url,
                self.clock() - since,
                self.purpose,
            )
