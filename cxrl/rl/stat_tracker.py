"""Per-prompt reward normalisation for DDPO advantages (Black et al. 2024, Sec. 5 / ddpo-pytorch).

Each report keeps a bounded history of its recent rewards; an image's advantage is its reward
standardised by its report's history, or by the whole batch while that history is shorter than
``min_count`` (counted in ``last_fallback`` and logged: a warning the first time, then info). The state is plain data so it can be checkpointed and restored exactly.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


class PerPromptStatTracker:
    def __init__(self, buffer_size: int = 16, min_count: int = 16, eps: float = 1e-6):
        if buffer_size < 1 or min_count < 1:
            raise ValueError(f"buffer_size and min_count must be >= 1, got {buffer_size}, {min_count}")
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.eps = eps
        self.history: dict[str, deque[float]] = {}
        self.last_fallback = 0  # images of the last update normalised with the batch statistics
        self._warned = False

    def update(self, prompts: Sequence[str], rewards: np.ndarray) -> np.ndarray:
        """Add a batch's rewards ([B]) and return their advantages ([B], float32)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.ndim != 1 or len(prompts) != len(rewards):
            raise ValueError(
                f"need one reward per prompt, got {len(prompts)} prompts and shape {rewards.shape}"
            )
        advantages = np.empty_like(rewards)
        fallback = 0
        batch_mean, batch_std = rewards.mean(), rewards.std()
        for prompt in dict.fromkeys(prompts):  # unique, in order
            mask = np.array([p == prompt for p in prompts])
            buf = self.history.setdefault(prompt, deque(maxlen=self.buffer_size))
            buf.extend(rewards[mask].tolist())
            if len(buf) < self.min_count:
                mean, std = batch_mean, batch_std
                fallback += int(mask.sum())
            else:
                mean, std = float(np.mean(buf)), float(np.std(buf))
            advantages[mask] = (rewards[mask] - mean) / (std + self.eps)
        self._report_fallback(fallback, len(rewards))
        return advantages.astype(np.float32)

    def _report_fallback(self, fallback: int, n: int) -> None:
        """Say how many images were normalised with the batch statistics (never silently)."""
        self.last_fallback = fallback
        if not fallback:
            return
        level = logging.INFO if self._warned else logging.WARNING
        self._warned = True
        log.log(
            level,
            "per-report normalisation: %d of %d images used the batch statistics (their report has "
            "fewer than min_count=%d rewards so far)",
            fallback,
            n,
            self.min_count,
        )

    def state_dict(self) -> dict:
        return {
            "buffer_size": self.buffer_size,
            "min_count": self.min_count,
            "history": {k: list(v) for k, v in self.history.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["buffer_size"] != self.buffer_size or state["min_count"] != self.min_count:
            raise ValueError(
                f"stat tracker settings differ from the checkpoint's "
                f"({state['buffer_size']}, {state['min_count']}); resume with the same config"
            )
        self.history = {k: deque(v, maxlen=self.buffer_size) for k, v in state["history"].items()}
