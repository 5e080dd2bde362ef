"""Scoring a sampled sub-batch: policy images plus the anchors not yet cached, in one reward call.

The backend is called in direct mode (no anchor images), so it returns each image's own
components; the trainer forms the RLCF total itself with :func:`cxrl.rewards.types.combine`
(CXRL, Han et al., MICCAI 2024, Sec. 2.3). That lets cached anchors skip the reward models:
only the anchors missing from the cache travel, appended to the policy images of the same call,
and their components go into the cache for the next time that (report, seed) comes up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch

from cxrl.infra.retry import call_with_retries
from cxrl.rewards.types import Components, ModelInfo, RewardBackend, RewardResult, combine
from cxrl.rl.sampler import Trajectory
from trainer.anchor_cache import AnchorCache, AnchorEntry, component_rows, stack_components


@dataclass
class SampledChunk:
    """One sampled sub-batch: policy trajectories and what is known of its anchors."""

    prompts: list[str]  # [B]
    seeds: list[int]  # [B]
    trajectory: Trajectory  # policy samples, images [B, 1, H, W]
    cached: list[AnchorEntry | None] = field(default_factory=list)  # [B]; None = not cached
    fresh_anchor: torch.Tensor | None = None  # [m, 1, H, W] anchors sampled now, for `missing`
    missing: list[int] = field(default_factory=list)  # indices (into the batch) of fresh anchors


@dataclass
class ScoredChunk:
    result: RewardResult
    retries: int
    seconds: float


def slice_components(c: Components, start: int, stop: int) -> Components:
    """Rows ``start:stop`` of every computed component."""
    out = Components()
    for f in fields(Components):
        value = getattr(c, f.name)
        if value is not None:
            setattr(out, f.name, value[start:stop])
    return out


def direct_total(c: Components, weights: dict[str, float]) -> torch.Tensor:
    """``sum_k w_k * component_k`` of one image set [B] (the anchor-free total)."""
    return combine(c, None, weights, rlcf=False)


def score_chunk(
    backend: RewardBackend,
    chunk: SampledChunk,
    weights: dict[str, float],
    rlcf: bool,
    needs_anchor: bool,
    cache: AnchorCache | None = None,
    retries: int = 0,
    backoff_s: float = 1.0,
) -> tuple[RewardResult, int]:
    """Score the policy images (and fresh anchors) of a chunk -> (RLCF result, retries used)."""
    n = len(chunk.prompts)
    images, reports = chunk.trajectory.images, list(chunk.prompts)
    if needs_anchor and chunk.missing:
        if chunk.fresh_anchor is None or chunk.fresh_anchor.shape[0] != len(chunk.missing):
            raise ValueError("chunk lists missing anchors but carries no matching fresh anchor images")
        images = torch.cat([images, chunk.fresh_anchor.to(images.dtype)])
        reports += [chunk.prompts[i] for i in chunk.missing]
    res, used = call_with_retries(lambda: backend.score(images, reports), retries, backoff_s)
    if res.policy is None:
        raise ValueError("reward backend returned no components")
    policy = slice_components(res.policy, 0, n)
    anchor = None
    if needs_anchor:
        rows = [e.components if e is not None else None for e in (chunk.cached or [None] * n)]
        if chunk.missing:
            fresh = slice_components(res.policy, n, n + len(chunk.missing))
            fresh_rows = component_rows(fresh, len(chunk.missing))
            for i, row in zip(chunk.missing, fresh_rows, strict=True):
                rows[i] = row
            if cache is not None:
                p = [chunk.prompts[i] for i in chunk.missing]
                s = [chunk.seeds[i] for i in chunk.missing]
                cache.put_many(p, s, chunk.fresh_anchor, fresh)
        if any(r is None for r in rows):
            raise ValueError("some anchors were neither cached nor sampled; sample the missing ones")
        anchor = stack_components(rows)
    total = combine(policy, anchor, weights, rlcf=rlcf)  # [B]
    return RewardResult(policy=policy, anchor=anchor, total=total, models=list(res.models)), used


def anchor_version(generator_id: str, sampling: dict, models: Sequence[ModelInfo]) -> str:
    """Everything an anchor's image and components depend on, hashed into a short version string."""
    payload = {
        "generator": generator_id,
        "sampling": sampling,
        "models": sorted([m.name, m.version, m.weights_hash] for m in models),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
