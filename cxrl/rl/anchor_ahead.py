"""Sampling the anchor ahead: the anchors of coming epochs, on a background thread.

:class:`AnchorAhead` samples, scores and stores the anchors of the epochs after the engine's current
one with its own copy of the generator (:class:`~cxrl.rl.frozen_anchor.FrozenAnchor`), so a second
core or an idle GPU does the anchor's work; the engine then finds them in its anchor store. The
engine's epoch is shared under a lock. Results are the same as without it; only the time changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cxrl.infra.retry import call_with_retries
from cxrl.rewards.types import RewardBackend
from cxrl.rl.anchor_store import AnchorStore
from cxrl.rl.config import SamplingSettings
from cxrl.rl.frozen_anchor import FrozenAnchor
from cxrl.rl.plan import Plan
from cxrl.rl.rlcf import RewardSpec
from cxrl.rl.sampler import Sampler

log = logging.getLogger(__name__)


class AnchorAhead:
    """Background thread: the anchors of epochs ``first..last-1`` into the anchor store, then ``after()``.

    Anything that goes wrong on the thread is logged and ends it: the engine then samples the
    anchors it misses itself, exactly as without it; results are the same, only the time changes.
    """

    def __init__(
        self,
        plan: Plan,
        anchor: FrozenAnchor,
        backend: RewardBackend,
        anchors: AnchorStore | None,
        sampling: SamplingSettings,
        spec: RewardSpec,
        after: Callable[[], object] | None = None,
    ):
        self.plan, self.anchor, self.backend, self.anchors = plan, anchor, backend, anchors
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
            if self.spec.needs_anchor and self.anchors is not None:
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
        """Sample, score and store the anchors of ``epoch`` the anchor store lacks; returns how many."""
        plan = self.plan(epoch)
        pairs = list(dict.fromkeys(zip(plan.prompts, plan.seeds, strict=True)))  # unique, in plan order
        entries = self.anchors.get_many([p for p, _ in pairs], [s for _, s in pairs], count=False)
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
            self.anchors.put_many(reports, seeds, images, res.policy)
            self.sampled += len(reports)
        return len(missing)
