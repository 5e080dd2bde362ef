"""The frozen anchor: the base generator (adapters off, no ACE) on a copy of its own.

:class:`~cxrl.rl.anchor_ahead.AnchorAhead` and the evaluation sample the anchor on a second thread
while the policy trains; a deep copy of the pipeline lets them do so without a lock on the policy.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

import torch

from cxrl.rl.config import SamplingSettings
from cxrl.rl.policy import Policy
from cxrl.rl.sampler import Sampler, sample_images


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
