"""The frozen anchor, sampled ahead of the training loop on a background thread.

The anchor's images depend only on the epoch plan (reports and bank seeds, :meth:`TrainLoop.plan`)
and on the held-out set, never on training. While the loop samples and trains the policy on one
core, :class:`AnchorAhead` samples the anchor for the coming epochs, scores it and puts it in the
Redis anchor cache, so the loop finds it there; when the training anchors are done it computes
the evaluation's anchor side. On the 2-core default-world demo this takes the anchor's sampling
(about a fifth of every epoch) and half of the evaluation off the critical path.

:class:`FrozenAnchor` is a private copy of the policy used only in anchor mode, with a lock, so
the background thread never touches the module the loop is training (anchor mode switches the
LoRA adapters off, which would race with the policy's own sampling and training).

Anything that goes wrong on the thread is logged and ends it: the loop and the evaluator then
compute the anchors they miss themselves, exactly as without it. The results are the same
either way; only the time changes.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from cxrl.infra.retry import call_with_retries
from cxrl.models.generator import Policy
from cxrl.rl.config import SamplingSettings
from cxrl.rl.sampler import sample_images
from trainer.anchor_cache import AnchorCache

if TYPE_CHECKING:
    from trainer.evaluate import Evaluator
    from trainer.loop import TrainLoop

log = logging.getLogger(__name__)


class FrozenAnchor:
    """The base generator (adapters off, no ACE) on its own copy of the policy; safe from any thread."""

    def __init__(self, policy: Policy):
        # LoRA and ACE are switched off in anchor mode, so the copy's anchor is the base model
        # whatever the policy's training state.
        self.policy = copy.deepcopy(policy)
        self._lock = threading.Lock()

    def sample(
        self, reports: Sequence[str], seeds: Sequence[int], sampling: SamplingSettings
    ) -> torch.Tensor:
        """Anchor images ``[N, 1, H, W]`` for ``reports`` with their noise ``seeds``, in batches."""
        with self._lock:
            return sample_images(self.policy, reports, seeds, sampling, anchor=True)


class AnchorAhead:
    """Background thread: anchors of the epochs ahead into the cache, then the evaluation's anchor."""

    def __init__(self, loop: TrainLoop, anchor: FrozenAnchor, evaluator: Evaluator | None = None):
        self.loop, self.anchor, self.evaluator = loop, anchor, evaluator
        # its own counters: the loop's cache hit rate counts only the loop's lookups
        cache = loop.cache
        self.cache = (
            AnchorCache(cache.r, cache.anchor_version, cache.prefix, cache.ttl_s, cache.guard)
            if cache is not None
            else None
        )
        self.sampled = 0  # anchor images this thread sampled and cached
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anchor-ahead", daemon=True)

    def start(self) -> AnchorAhead:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to finish after its current batch and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if self.cache is not None and self.loop.needs_anchor:
                for epoch in range(self.loop.epoch + 1, self.loop.cfg.epochs):
                    if self._stop.is_set():
                        return
                    if epoch > self.loop.epoch:  # the loop samples what it has already reached
                        self.prefetch(epoch)
            if self.evaluator is not None and not self._stop.is_set():
                self.evaluator.anchor()
        except Exception as exc:  # the loop and the evaluator fall back to sampling their own anchors
            self.error = exc
            log.warning(
                "sampling the anchor ahead stopped (%s: %s); the loop samples its own",
                type(exc).__name__,
                exc,
            )

    def prefetch(self, epoch: int) -> int:
        """Sample, score and cache the anchors of ``epoch`` the cache lacks; returns how many."""
        if self.cache is None:
            return 0
        prompts, seeds = self.loop.plan(epoch)
        pairs = list(dict.fromkeys(zip(prompts, seeds, strict=True)))  # unique, in plan order
        entries = self.cache.get_many([p for p, _ in pairs], [s for _, s in pairs])
        missing = [pair for pair, entry in zip(pairs, entries, strict=True) if entry is None]
        sampling = self.loop.cfg.sampling
        for i in range(0, len(missing), sampling.batch_size):
            if self._stop.is_set():
                break
            part = missing[i : i + sampling.batch_size]
            reports, part_seeds = [p for p, _ in part], [s for _, s in part]
            images = self.anchor.sample(reports, part_seeds, sampling)
            res, _ = call_with_retries(
                lambda images=images, reports=reports: self.loop.backend.score(images, reports),
                self.loop.retries,
                self.loop.backoff_s,
                "anchor-ahead reward call",
            )
            if res.policy is None:
                raise ValueError("reward backend returned no components")
            self.cache.put_many(reports, part_seeds, images, res.policy)
            self.sampled += len(part)
        return len(missing)
