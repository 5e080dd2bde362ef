"""Anchor cache in Redis: the frozen anchor's image and reward components per (report, noise seed).

The anchor (base model, adapters off, no ACE) never changes during a run, and each image's noise
is a function of its seed (:mod:`cxrl.rl.sampler`), so its image for a report and seed is computed
once. With a fixed bank of seeds per report, later epochs find most anchors here and skip both the
anchor's sampling and its reward calls.

Key: ``{prefix}:anchor:<sha256(anchor_version, report, seed)>``, where ``anchor_version`` names
everything the anchor image depends on (generator weights, sampling settings, reward models).
Value: a hash with ``png`` (8-bit greyscale PNG of the image) and ``components`` (JSON of the
per-image reward components). It is one of the anchor stores (:mod:`cxrl.rl.anchor_store`): their
hit/miss counting and put checks, and the one row check (:func:`cxrl.rewards.types.valid_row`) when
an entry is read: one that does not decode or holds a non-finite value (a poisoned or damaged cache)
is a miss, deleted and logged.

With a :class:`~cxrl.infra.redis_guard.RedisGuard`, Redis failing never fails a call: a read answers
"not cached" for every pair and a write is dropped, so the trainer goes on uncached until Redis is back.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
import torch

from cxrl import imaging
from cxrl.infra.redis_guard import RedisGuard
from cxrl.rewards.types import Components, valid_row
from cxrl.rl.anchor_store import AnchorEntry, CountedStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class AnchorCache(CountedStore):
    """Get/put anchor samples for (report, seed) pairs of one anchor version."""

    def __init__(
        self,
        client: redis.Redis,
        anchor_version: str,
        prefix: str = "cxrl",
        ttl_s: int | None = None,
        guard: RedisGuard | None = None,
    ):
        if not anchor_version:
            raise ValueError("anchor_version must name the generator and sampling settings")
        super().__init__()
        self.r = client
        self.guard = guard  # None: Redis errors propagate
        self.anchor_version = anchor_version
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _run(self, what: str, fn: Callable[[], T], fallback: T) -> T:
        return self.guard.call(what, fn, fallback) if self.guard is not None else fn()

    def key(self, report: str, seed: int) -> str:
        digest = hashlib.sha256(
            json.dumps([self.anchor_version, report, int(seed)], ensure_ascii=False).encode()
        ).hexdigest()
        return f"{self.prefix}:anchor:{digest}"

    def _lookup(self, pairs: list[tuple[str, int]]) -> list[AnchorEntry | None]:
        """One entry per (report, seed); ``None`` where not cached (or invalid: then deleted)."""
        pipe = self.r.pipeline()
        for report, seed in pairs:
            pipe.hmget(self.key(report, seed), ["png", "components"])
        found = self._run("anchor cache read", pipe.execute, None)
        if found is None:  # Redis down: nothing is cached
            found = [(None, None)] * len(pairs)
        out: list[AnchorEntry | None] = []
        bad: list[str] = []
        for (report, seed), (png, comps) in zip(pairs, found, strict=True):
            entry = None if png is None or comps is None else _decode(png, comps)
            if entry is None and png is not None:
                bad.append(self.key(report, seed))
            out.append(entry)
        if bad:
            log.warning("anchor cache: %d invalid entr(ies) deleted and sampled again: %s", len(bad), bad[:3])
            self._run("anchor cache delete", lambda: self.r.delete(*bad), None)
        return out

    def put_many(
        self,
        reports: Sequence[str],
        seeds: Sequence[int],
        images: torch.Tensor,  # [B, 1, H, W] in [0, 1]
        components: Components,
    ) -> None:
        items = self._storable(reports, seeds, images, components)
        if not items:
            return
        pngs = imaging.encode_pngs(torch.stack([img for _, _, img, _ in items]))
        pipe = self.r.pipeline()
        for (report, seed, _, row), png in zip(items, pngs, strict=True):
            key = self.key(report, seed)
            pipe.hset(key, mapping={"png": png, "components": json.dumps(row)})
            if self.ttl_s:
                pipe.expire(key, self.ttl_s)
        self._run("anchor cache write", pipe.execute, None)


def _decode(png: bytes, comps: bytes) -> AnchorEntry | None:
    """A stored entry, or None when anything in it is malformed or not finite."""
    row = valid_row(comps)
    if row is None:
        return None
    try:
        image = imaging.decode_png(png)
    except Exception:  # garbage of any kind is a miss, never a crash
        return None
    return AnchorEntry(image=image, components=row)
