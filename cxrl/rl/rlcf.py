"""The scoring step of an epoch, where the RLCF total is formed (Han et al., MICCAI 2024, Sec. 2.3).

CXRL compares each policy image with the frozen anchor's image for the same report and initial
noise ("reinforcement learning with comparative feedback"):

    r = w_align * r_align(x) + w_diag * (acc(x) - acc(x_a)) + w_cons * (cos(x, y) - cos(x_a, y))

The anchor never changes during a run and each image's noise is a function of its seed
(:mod:`cxrl.rl.sampler`), so its reward components for a (report, seed) pair are computed once and
kept in an anchor store (:mod:`cxrl.rl.anchor_store`). The reward backend is sent no anchor images:
only the anchors a store lacks travel, appended to the policy images of the same call as images of
their own, and :func:`score_chunk` forms the total with :func:`cxrl.rewards.types.combine` from
the policy's components and the stored or fresh anchor's. This is the one place a run's RLCF total
is formed; ``cfg.rewards.rlcf`` (through :class:`RewardSpec`) says whether it is comparative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cxrl.infra.retry import call_with_retries
from cxrl.rewards.types import Components, RewardBackend, RewardResult, combine
from cxrl.rl.anchor_store import AnchorEntry, AnchorStore
from cxrl.rl.sampler import Trajectory


def direct_total(c: Components, weights: dict[str, float]) -> torch.Tensor:
    """``sum_k w_k * component_k`` of one image set [B] (the anchor-free total)."""
    return combine(c, None, weights, rlcf=False)


def anchor_total(anchor: Components, weights: dict[str, float], rlcf: bool) -> torch.Tensor:
    """The anchor's own total [B]: under RLCF its comparative terms against itself are zero."""
    return combine(anchor, anchor, weights, rlcf=True) if rlcf else direct_total(anchor, weights)


@dataclass
class SampledChunk:
    """One sampled sub-batch: policy trajectories and what is known of its anchors."""

    prompts: list[str]  # [B]
    seeds: list[int]  # [B]
    trajectory: Trajectory  # policy samples, images [B, 1, H, W]
    cached: list[AnchorEntry | None] = field(default_factory=list)  # [B]; None = not stored
    fresh_anchor: torch.Tensor | None = None  # [m, 1, H, W] anchors sampled now, for `missing`
    missing: list[int] = field(default_factory=list)  # indices (into the batch) of fresh anchors


@dataclass
class RewardSpec:
    """How a chunk is scored: weights, comparative or direct, and how failed calls are retried."""

    weights: dict[str, float]
    rlcf: bool
    needs_anchor: bool
    retries: int = 0  # retries of a transient reward-call failure
    backoff_s: float = 1.0  # first retry delay, doubling


def score_chunk(
    backend: RewardBackend, chunk: SampledChunk, spec: RewardSpec, store: AnchorStore | None = None
) -> tuple[RewardResult, int]:
    """Score the policy images (and fresh anchors) of a chunk -> (RLCF result, retries used)."""
    n = len(chunk.prompts)
    images, reports = chunk.trajectory.images, list(chunk.prompts)
    if spec.needs_anchor and chunk.missing:
        if chunk.fresh_anchor is None or chunk.fresh_anchor.shape[0] != len(chunk.missing):
            raise ValueError("chunk lists missing anchors but carries no matching fresh anchor images")
        images = torch.cat([images, chunk.fresh_anchor.to(images.dtype)])
        reports += [chunk.prompts[i] for i in chunk.missing]
    res, used = call_with_retries(lambda: backend.score(images, reports), spec.retries, spec.backoff_s)
    if res.policy is None:
        raise ValueError("reward backend returned no components")
    policy = res.policy.take(slice(0, n))
    anchor = None
    if spec.needs_anchor:
        rows = [e.components if e is not None else None for e in (chunk.cached or [None] * n)]
        if chunk.missing:
            fresh = res.policy.take(slice(n, n + len(chunk.missing)))
            for i, row in zip(chunk.missing, fresh.to_rows(), strict=True):
                rows[i] = row
            if store is not None:
                p = [chunk.prompts[i] for i in chunk.missing]
                s = [chunk.seeds[i] for i in chunk.missing]
                store.put_many(p, s, chunk.fresh_anchor, fresh)
        if any(r is None for r in rows):
            raise ValueError("some anchors were neither stored nor sampled; sample the missing ones")
        anchor = Components.from_rows(rows)
    total = combine(policy, anchor, spec.weights, rlcf=spec.rlcf)  # [B]
    return RewardResult(policy=policy, anchor=anchor, total=total, models=list(res.models)), used
