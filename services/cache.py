"""Redis score cache: one entry per (model, image content, report).

Key: ``cxrl:score:v2:<model name>:<version>:<weights hash>[:<salt>]:<content hash>``, where the
salt holds the report labeler's version (diagnostic) or the tokenizer's (consistency), and
the content hash is a BLAKE2b digest of the image tensor (shape + float32 bytes)
and, for models that read it, the report text. A new checkpoint therefore never
serves stale scores. Values are the image's Components row as JSON
(:meth:`cxrl.rewards.types.Components.to_rows`, the anchor cache's row format too).

Values are not trusted: a row read back must have exactly the fields and lengths of a row the
model produces (:func:`cxrl.rewards.types.row_signature`), every value a finite number (the one row
check of every store, :func:`cxrl.rewards.types.valid_row`); anything else (garbage, NaN, a field
too many) is a miss, deleted from Redis and logged, and the image is scored afresh. A row that fails
the same check is never written.

The cache is optional: without ``REDIS_URL``, or when Redis cannot be reached,
scoring goes on uncached; Redis calls go through the shared outage guard
(:class:`cxrl.infra.redis_guard.RedisGuard`: an outage is logged once, Redis is
tried again every ``retry_s``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence

import torch

from cxrl.infra.redis_guard import RedisGuard
from cxrl.rewards.types import ModelInfo, RowSignature, valid_row

log = logging.getLogger(__name__)

PREFIX = "cxrl:score:v2"  # v2: rows in Components.to_rows format (a number per [B] field)


def content_hash(image: torch.Tensor, report: str | None) -> str:
    """Digest of one image ``[1,H,W]`` (float32 values) and optionally its report."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(tuple(image.shape)).encode())
    h.update(image.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    if report is not None:
        h.update(b"\0report\0")
        h.update(report.encode("utf-8"))
    return h.hexdigest()


def model_prefix(info: ModelInfo, salt: str = "") -> str:
    """Key prefix of one model; ``salt`` names what else its scores depend on (labeler, tokenizer)."""
    return f"{PREFIX}:{info.name}:{info.version}:{info.weights_hash}" + (f":{salt}" if salt else "")


class ScoreCache:
    """Get/put per-image score rows; every method degrades to a no-op without Redis."""

    def __init__(
        self,
        url: str | None = None,
        ttl_s: int = 7 * 24 * 3600,
        timeout_s: float = 0.5,
        retry_s: float = 30.0,
        salt: str = "",  # versions of what else the scores depend on, in every key (see model_prefix)
    ):
        self.salt = salt
        self.url = url if url is not None else os.environ.get("REDIS_URL", "")
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.guard: RedisGuard | None = None
        if not self.url:
            log.info("REDIS_URL is not set: the score cache is off")
        else:
            self.guard = RedisGuard.open(
                self.url, retry_s, timeout_s, purpose="score cache", impact="scoring goes on uncached"
            )

    @property
    def enabled(self) -> bool:
        return self.guard is not None

    def get(self, info: ModelInfo, hashes: Sequence[str], like: RowSignature) -> list[dict | None]:
        """Cached rows for ``hashes`` shaped like ``like`` (None where missing, invalid or down)."""
        if self.guard is None or not hashes:
            return [None] * len(hashes)
        keys = [f"{model_prefix(info, self.salt)}:{h}" for h in hashes]
        raw = self.guard.call("score cache read", lambda: self.guard.client.mget(keys), None)
        if raw is None:
            return [None] * len(hashes)
        rows = [None if r is None else valid_row(r, like) for r in raw]
        bad = [k for k, r, row in zip(keys, raw, rows, strict=True) if r is not None and row is None]
        if bad:
            log.warning(
                "score cache: %d invalid entries (e.g. %s) dropped and deleted; rescoring", len(bad), bad[0]
            )
            self.guard.call("score cache delete", lambda: self.guard.client.delete(*bad), None)
        return rows

    def put(self, info: ModelInfo, hashes: Sequence[str], rows: Sequence[dict]) -> None:
        if self.guard is None or not hashes:
            return
        prefix = model_prefix(info, self.salt)
        good = [(h, row) for h, row in zip(hashes, rows, strict=True) if valid_row(row) is not None]
        if len(good) < len(hashes):  # a NaN score is served to this call only, never cached
            log.warning(
                "score cache: %d row(s) of %s not cached (not finite or malformed)",
                len(hashes) - len(good),
                info.name,
            )
        if not good:
            return
        pipe = self.guard.client.pipeline(transaction=False)
        for h, row in good:
            pipe.set(f"{prefix}:{h}", json.dumps(row), ex=self.ttl_s)
        self.guard.call("score cache write", pipe.execute, None)
