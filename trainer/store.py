"""Run registry and per-run metrics stream in Redis.

Keys (``prefix`` defaults to ``cxrl``):

- ``{prefix}:runs``            sorted set: run id -> start time (unix seconds)
- ``{prefix}:run:{id}``        hash: status, started/updated times, config, out dir, latest metrics (JSON)
- ``{prefix}:metrics:{id}``    stream: one entry per epoch (XADD), field ``metrics`` = JSON of that epoch

``connect`` returns ``None`` (and logs why) when Redis is unreachable, so the trainer runs without it.
With a :class:`~cxrl.infra.redis_guard.RedisGuard`, the trainer's writes (register, status, metrics)
never raise: metrics written while Redis is down are kept (oldest first, up to ``max_unsent``) and
sent with the next write that gets through, which also re-creates the run's registry entry if a
restarted Redis lost it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from cxrl.infra.redis_guard import RedisGuard

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUSES = ("running", "finished", "failed", "interrupted", "stopped")


def connect(url: str | None, timeout_s: float = 2.0) -> redis.Redis | None:
    """A client for ``url`` that answered PING, or ``None`` with a warning saying what is lost."""
    if not url:
        log.warning("no Redis configured: running uncached, without metrics stream or run registry")
        return None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s * 5)
        client.ping()
        return client
    except (redis.RedisError, ValueError, OSError) as exc:
        log.warning(
            "Redis at %s is unreachable (%s): running uncached, without metrics stream or run registry",
            url,
            exc,
        )
        return None


@dataclass
class RunInfo:
    """One registered run as listed by `cxrl runs`."""

    run_id: str
    status: str
    started: float
    updated: float
    out_dir: str = ""
    epoch: int | None = None
    latest: dict[str, Any] = field(default_factory=dict)


class RunStore:
    """Registry of runs and their metrics streams in one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "cxrl",
        stream_maxlen: int = 100_000,
        guard: RedisGuard | None = None,
        max_unsent: int = 10_000,
    ):
        self.r = client
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self.guard = guard  # None: Redis errors propagate
        self._unsent: deque[tuple[str, int, str]] = deque(maxlen=max_unsent)  # (run id, epoch, JSON)

    def _run(self, what: str, fn: Callable[[], T], fallback: T) -> T:
        return self.guard.call(what, fn, fallback) if self.guard is not None else fn()

    @property
    def unsent(self) -> int:
        """Epochs whose metrics wait for Redis to come back."""
        return len(self._unsent)

    def _run_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def _stream_key(self, run_id: str) -> str:
        return f"{self.prefix}:metrics:{run_id}"

    def register(self, run_id: str, out_dir: str = "", config: dict[str, Any] | None = None) -> None:
        """Add (or re-open, on resume) a run with status ``running``."""
        self._run("run registration", lambda: self._register(run_id, out_dir, config), None)

    def _register(self, run_id: str, out_dir: str, config: dict[str, Any] | None) -> None:
        now = time.time()
        key = self._run_key(run_id)
        started = self.r.hget(key, "started")
        pipe = self.r.pipeline()
        pipe.hset(
            key,
            mapping={
                "status": "running",
                "started": started.decode() if started else repr(now),
                "updated": repr(now),
                "out_dir": out_dir,
                "config": json.dumps(config or {}),
            },
        )
        pipe.zadd(f"{self.prefix}:runs", {run_id: float(started) if started else now})
        pipe.execute()

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; use one of {STATUSES}")
        mapping = {"status": status, "updated": repr(time.time())}
        if error:
            mapping["error"] = error[:2000]
        self._run("run status", lambda: self.r.hset(self._run_key(run_id), mapping=mapping), None)

    def add_metrics(self, run_id: str, epoch: int, metrics: dict[str, Any]) -> str | None:
        """Append one epoch's metrics to the run's stream and make them its latest; returns the entry id.

        Under a guard, returns None while Redis is down; the metrics go out with the next write.
        """
        if self._unsent.maxlen and len(self._unsent) == self._unsent.maxlen:
            log.warning(
                "dropping the oldest unsent metrics (epoch %d): Redis down too long", self._unsent[0][1]
            )
        self._unsent.append((run_id, epoch, json.dumps({"epoch": epoch, **metrics})))
        ids = self._run("metrics write", self._send_unsent, None)
        return ids[-1] if ids else None

    def _send_unsent(self) -> list[str]:
        """Send every waiting epoch in one transaction, oldest first; returns their stream entry ids."""
        pending = list(self._unsent)
        now = time.time()
        pipe = self.r.pipeline()
        for run_id, epoch, payload in pending:
            key = self._run_key(run_id)
            pipe.xadd(
                self._stream_key(run_id),
                {"epoch": str(epoch), "metrics": payload},
                maxlen=self.stream_maxlen,
                approximate=True,
            )
            pipe.hset(key, mapping={"latest": payload, "epoch": str(epoch), "updated": repr(now)})
            # a Redis restarted without its data has lost the run's entry: re-create it, else no-ops
            pipe.hsetnx(key, "status", "running")
            pipe.hsetnx(key, "started", repr(now))
            pipe.zadd(f"{self.prefix}:runs", {run_id: now}, nx=True)
        replies = pipe.execute()
        for _ in pending:
            self._unsent.popleft()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in replies[0::5]]

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Every epoch's metrics of a run, oldest first."""
        return [json.loads(fields[b"metrics"]) for _, fields in self.r.xrange(self._stream_key(run_id))]

    def get(self, run_id: str) -> RunInfo | None:
        raw = self.r.hgetall(self._run_key(run_id))
        if not raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}
        return RunInfo(
            run_id=run_id,
            status=h.get("status", "unknown"),
            started=float(h.get("started", 0.0)),
            updated=float(h.get("updated", 0.0)),
            out_dir=h.get("out_dir", ""),
            epoch=int(h["epoch"]) if "epoch" in h else None,
            latest=json.loads(h["latest"]) if "latest" in h else {},
        )

    def list_runs(self, limit: int = 50) -> list[RunInfo]:
        """Newest first."""
        ids = self.r.zrevrange(f"{self.prefix}:runs", 0, max(0, limit - 1))
        runs = [self.get(i.decode()) for i in ids]
        return [r for r in runs if r is not None]
