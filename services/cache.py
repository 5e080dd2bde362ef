"""Redis score cache: one entry per (model, image content, report).

Key: ``cxrl:score:v1:<model name>:<version>:<weights hash>:<content hash>``, where
the content hash is a BLAKE2b digest of the image tensor (shape + float32 bytes)
and, for models that read it, the report text. A new checkpoint therefore never
serves stale scores. Values are the image's Components row as JSON (float32
values survive the round trip exactly).

The cache is optional: without ``REDIS_URL``, or when Redis cannot be reached,
scoring goes on uncached and the problem is logged once (reconnects are tried
again after ``retry_s``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence

import redis
import torch

from cxrl.rewards.types import ModelInfo

log = logging.getLogger(__name__)

PREFIX = "cxrl:score:v1"


def content_hash(image: torch.Tensor, report: str | None) -> str:
    """Digest of one image ``[1,H,W]`` (float32 values) and optionally its report."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(tuple(image.shape)).encode())
    h.update(image.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    if report is not None:
        h.update(b"\0report\0")
        h.update(report.encode("utf-8"))
    return h.hexdigest()


def model_prefix(info: ModelInfo) -> str:
    return f"{PREFIX}:{info.name}:{info.version}:{info.weights_hash}"


class ScoreCache:
    """Get/put per-image score rows; every method degrades to a no-op without Redis."""

    def __init__(
        self,
        url: str | None = None,
        ttl_s: int = 7 * 24 * 3600,
        timeout_s: float = 0.5,
        retry_s: float = 30.0,
    ):
        self.url = url if url is not None else os.environ.get("REDIS_URL", "")
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._client: redis.Redis | None = None
        self._down_since: float | None = None
        self._warned = False
        if not self.url:
            log.info("REDIS_URL is not set: the score cache is off")

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def _redis(self) -> redis.Redis | None:
        if not self.url:
            return None
        if self._client is not None:
            return self._client
        if self._down_since is not None and time.monotonic() - self._down_since < self.retry_s:
            return None
        try:
            client = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
            client.ping()
        except (redis.RedisError, OSError, ValueError) as exc:
            self._mark_down(exc)
            return None
        if self._warned:
            log.info("score cache: Redis at %s is reachable again", self.url)
        self._client, self._down_since, self._warned = client, None, False
        return client

    def _mark_down(self, exc: Exception) -> None:
        self._client, self._down_since = None, time.monotonic()
        if not self._warned:
            log.warning("score cache: Redis at %s unavailable (%s); scoring without cache", self.url, exc)
            self._warned = True

    def get(self, info: ModelInfo, hashes: Sequence[str]) -> list[dict | None]:
        """Cached rows for ``hashes`` (None where missing or the cache is down)."""
        client = self._redis()
        if client is None or not hashes:
            return [None] * len(hashes)
        prefix = model_prefix(info)
        try:
            raw = client.mget([f"{prefix}:{h}" for h in hashes])
        except (redis.RedisError, OSError) as exc:
            self._mark_down(exc)
            return [None] * len(hashes)
        return [None if r is None else json.loads(r) for r in raw]

    def put(self, info: ModelInfo, hashes: Sequence[str], rows: Sequence[dict]) -> None:
        client = self._redis()
        if client is None or not hashes:
            return
        prefix = model_prefix(info)
        try:
            with client.pipeline(transaction=False) as pipe:
                for h, row in zip(hashes, rows, strict=True):
                    pipe.set(f"{prefix}:{h}", json.dumps(row), ex=self.ttl_s)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._mark_down(exc)
