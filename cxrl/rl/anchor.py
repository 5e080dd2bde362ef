"""RLCF's anchor: the frozen base generator, its stored samples, and scoring a chunk against them.

CXRL compares each policy image with the frozen anchor's image for the same report and initial
noise (Han et al., MICCAI 2024, Sec. 2.3, "reinforcement learning with comparative feedback"):

    r = w_align * r_align(x) + w_diag * (acc(x) - acc(x_a)) + w_cons * (cos(x, y) - cos(x_a, y))

The anchor never changes during a run and each image's noise is a function of its seed
(:mod:`cxrl.rl.sampler`), so its image and reward components for a (report, seed) pair are computed
once and kept in an anchor store (:mod:`cxrl.rl.anchor_store`: in memory, on disk, or in Redis in
the trainer service). The
reward backend is called in direct mode: only the anchors a store lacks travel, appended to the
policy images of the same call, and the total is formed here with :func:`cxrl.rewards.types.combine`.

:class:`AnchorAhead` samples the anchors of coming epochs on a background thread with its own copy
of the generator (:class:`FrozenAnchor`), so a second core or an idle GPU does the anchor's work.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from cxrl.infra.retry import call_with_retries
from cxrl.models.generator import generator_id
from cxrl.reports.labeler import labeler_version
from cxrl.rewards.types import Components, ModelInfo, RewardBackend, RewardResult, combine
from cxrl.rl.anchor_store import (  # noqa: F401  (the stores' home; re-exported for their users)
    AnchorEntry,
    AnchorStore,
    CountedStore,
    DirAnchorStore,
    MemoryAnchorStore,
)
from cxrl.rl.config import SamplingSettings
from cxrl.rl.plan import Plan
from cxrl.rl.policy import Policy
from cxrl.rl.sampler import Sampler, Trajectory, sample_images

log = logging.getLogger(__name__)


def anchor_version(generator_id: str, sampling: dict, models: Sequence[ModelInfo]) -> str:
    """Everything an anchor's image and components depend on, hashed into a short version string."""
    payload = {
        "generator": generator_id,  # weights and tokenizer files of the pipeline
        "sampling": sampling,
        "models": sorted([m.name, m.version, m.weights_hash] for m in models),
        "labeler": labeler_version(),  # the diagnostic accuracy is scored against the report's labels
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def sampler_version(
    generator: str, sampling: SamplingSettings, models: Sequence[ModelInfo], generator_hash: str | None = None
) -> str:
    """:func:`anchor_version` of a run: its generator (name or directory), sampler and reward models."""
    return anchor_version(
        generator_hash or generator_id(generator),
        Sampler.anchor(sampling).version(),  # the training anchor's sampler
        models,
    )


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


class FrozenAnchor:
    """The base generator (adapters off, no ACE) on its own copy of the policy; safe from any thread."""

    def __init__(self, policy: Policy):
        # LoRA and ACE are switched off in anchor mode, so the copy's anchor is the base model
        # whatever the policy's training state.
        self.policy = copy.deepcopy(policy)
        self._lock = threading.Lock()

    def sample(
        self,
        reports: Sequence[str],
        seeds: Sequence[int],
        sampling: SamplingSettings,
        sampler: Sampler | None = None,
    ) -> torch.Tensor:
        """Anchor images ``[N, 1, H, W]`` for ``reports`` with their noise ``seeds``, in batches
        (evaluation's sampler unless ``sampler`` is given)."""
        with self._lock:
            return sample_images(self.policy, reports, seeds, sampling, anchor=True, sampler=sampler)


class AnchorAhead:
    """Background thread: the anchors of epochs ``first..last-1`` into a store, then ``after()``.

    Anything that goes wrong on the thread is logged and ends it: the engine then samples the
    anchors it misses itself, exactly as without it; results are the same, only the time changes.
    """

    def __init__(
        self,
        plan: Plan,
        anchor: FrozenAnchor,
        backend: RewardBackend,
        store: AnchorStore | None,
        sampling: SamplingSettings,
        spec: RewardSpec,
        after: Callable[[], object] | None = None,
    ):
        self.plan, self.anchor, self.backend, self.store = plan, anchor, backend, store
        self.sampling, self.spec, self.after = sampling, spec, after
        self.sampled = 0  # anchor images this thread sampled and stored
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # guards _current: the engine's thread writes it, this one reads it
        self._current = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> int:
        """The epoch the engine is on (set by the engine's thread); the thread works only on later ones."""
        with self._lock:
            return self._current

    @current.setter
    def current(self, epoch: int) -> None:
        with self._lock:
            self._current = int(epoch)

    def start(self, first: int, last: int) -> AnchorAhead:
        self.current = first - 1
        self._thread = threading.Thread(
            target=self._run, args=(first, last), name="anchor-ahead", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to finish after its current batch and wait for it."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self, first: int, last: int) -> None:
        try:
            if self.spec.needs_anchor and self.store is not None:
                for epoch in range(first, last):
                    if self._stop.is_set():
                        return
                    if epoch > self.current:  # the engine samples what it has already reached
                        self.prefetch(epoch)
            if self.after is not None and not self._stop.is_set():
                self.after()
        except Exception as exc:  # the engine and the evaluator fall back to sampling their own
            self.error = exc
            log.warning(
                "sampling the anchor ahead stopped (%s: %s); the engine samples its own",
                type(exc).__name__,
                exc,
            )

    def prefetch(self, epoch: int) -> int:
        """Sample, score and store the anchors of ``epoch`` the store lacks; returns how many."""
        plan = self.plan(epoch)
        pairs = list(dict.fromkeys(zip(plan.prompts, plan.seeds, strict=True)))  # unique, in plan order
        entries = self.store.get_many([p for p, _ in pairs], [s for _, s in pairs], count=False)
        missing = [pair for pair, entry in zip(pairs, entries, strict=True) if entry is None]
        bs = self.sampling.batch_size
        for i in range(0, len(missing), bs):
            if self._stop.is_set():
                break
            reports, seeds = [p for p, _ in missing[i : i + bs]], [s for _, s in missing[i : i + bs]]
            images = self.anchor.sample(reports, seeds, self.sampling, Sampler.anchor(self.sampling))
            res, _ = call_with_retries(
                lambda images=images, reports=reports: self.backend.score(images, reports),
                self.spec.retries,
                self.spec.backoff_s,
                "anchor-ahead reward call",
            )
            if res.policy is None:
                raise ValueError("reward backend returned no components")
            self.store.put_many(reports, seeds, images, res.policy)
            self.sampled += len(reports)
        return len(missing)
