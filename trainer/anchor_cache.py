"""Anchor cache in Redis: the frozen anchor's image and reward components per (report, noise seed).

The anchor (base model, adapters off, no ACE) never changes during a run, and each image's noise
is a function of its seed (:mod:`cxrl.rl.sampler`), so its image for a report and seed is computed
once. With a fixed bank of seeds per report, later epochs find most anchors here and skip both the
anchor's sampling and its reward calls.

Key: ``{prefix}:anchor:<sha256(anchor_version, report, seed)>``, where ``anchor_version`` names
everything the anchor image depends on (generator weights, sampling settings, reward models).
Value: a hash with ``png`` (8-bit greyscale PNG of the image) and ``components`` (JSON of the
per-image reward components).

With a :class:`~cxrl.infra.redis_guard.RedisGuard`, Redis failing never fails a call: a read answers
"not cached" for every pair and a write is dropped, so the trainer goes on uncached until Redis is back.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis
import torch

from cxrl import imaging
from cxrl.infra.redis_guard import RedisGuard
from cxrl.rewards.types import Components

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPONENT_FIELDS = ("psi", "r_align", "diag_acc", "diag_probs", "consistency")


@dataclass
class AnchorEntry:
    """One cached anchor sample."""

    image: torch.Tensor  # [1, H, W] float in [0, 1] (8-bit precision)
    components: dict[str, float | list[float]]  # per-image slice of Components; absent = not computed


def component_rows(components: Components, n: int) -> list[dict[str, float | list[float]]]:
    """Split batch Components ([B] / [B, k] tensors) into ``n`` per-image JSON-able dicts."""
    rows: list[dict[str, float | list[float]]] = [{} for _ in range(n)]
    for name in COMPONENT_FIELDS:
        value = getattr(components, name)
        if value is None:
            continue
        if value.shape[0] != n:
            raise ValueError(f"component {name} has {value.shape[0]} rows for {n} images")
        for i, row in enumerate(value.detach().cpu().float().tolist()):
            rows[i][name] = row
    return rows


def stack_components(rows: Sequence[dict[str, float | list[float]]]) -> Components:
    """Per-image dicts -> batch Components; a field is set only when every row has it."""
    out = Components()
    for name in COMPONENT_FIELDS:
        if rows and all(name in r for r in rows):
            setattr(out, name, torch.tensor([r[name] for r in rows], dtype=torch.float32))
    return out


class AnchorCache:
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
        self.r = client
        self.guard = guard  # None: Redis errors propagate
        self.anchor_version = anchor_version
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    def _run(self, what: str, fn: Callable[[], T], fallback: T) -> T:
        return self.guard.call(what, fn, fallback) if self.guard is not None else fn()

    def key(self, report: str, seed: int) -> str:
        digest = hashlib.sha256(
            json.dumps([self.anchor_version, report, int(seed)], ensure_ascii=False).encode()
        ).hexdigest()
        return f"{self.prefix}:anchor:{digest}"

    def get_many(self, reports: Sequence[str], seeds: Sequence[int]) -> list[AnchorEntry | None]:
        """One entry per (report, seed); ``None`` where not cached. Counts hits and misses."""
        if len(reports) != len(seeds):
            raise ValueError(f"got {len(reports)} reports and {len(seeds)} seeds; give one seed per report")
        pipe = self.r.pipeline()
        for report, seed in zip(reports, seeds, strict=True):
            pipe.hmget(self.key(report, seed), ["png", "components"])
        found = self._run("anchor cache read", pipe.execute, None)
        if found is None:  # Redis down: nothing is cached
            found = [(None, None)] * len(reports)
        out: list[AnchorEntry | None] = []
        for png, comps in found:
            if png is None or comps is None:
                out.append(None)
                continue
            out.append(AnchorEntry(image=imaging.decode_png(png), components=json.loads(comps)))
        n_hit = sum(e is not None for e in out)
        self.hits += n_hit
        self.misses += len(out) - n_hit
        return out

    def put_many(
        self,
        reports: Sequence[str],
        seeds: Sequence[int],
        images: torch.Tensor,  # [B, 1, H, W] in [0, 1]
        components: Components,
    ) -> None:
        imaging.validate(images, "anchor images")
        n = images.shape[0]
        if not len(reports) == len(seeds) == n:
            raise ValueError(f"got {len(reports)} reports, {len(seeds)} seeds and {n} anchor images")
        rows = component_rows(components, n)
        pngs = imaging.encode_pngs(images)
        pipe = self.r.pipeline()
        for report, seed, png, row in zip(reports, seeds, pngs, rows, strict=True):
            key = self.key(report, seed)
            pipe.hset(key, mapping={"png": png, "components": json.dumps(row)})
            if self.ttl_s:
                pipe.expire(key, self.ttl_s)
        self._run("anchor cache write", pipe.execute, None)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def reset_stats(self) -> None:
        self.hits = self.misses = 0
