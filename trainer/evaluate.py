"""Held-out evaluation: anchor vs tuned policy on fixed test-split reports with fixed noise.

Per model (the anchor, i.e. the base generator, and the CXRL policy) on the same reports and seeds:

- ``r_align``: mean posture reward (CXRL Sec. 2.3);
- ``auroc``: mean per-label AUROC of the diagnostic classifier on the generated images against the
  labels of the reports that prompted them (the paper's Table 1b; :mod:`cxrl.eval.auroc`);
- ``clip_similarity``: mean CXR-CLIP cosine between image and report;
- ``reward_total``: mean ``w_align * r_align + w_diag * acc + w_consist * cos`` (the weights of the
  run). The difference cxrl - anchor of this number equals the mean RLCF reward of the policy,
  since the anchor terms of RLCF cancel.

``reward_total_diff`` is the mean per-report difference with a bootstrap interval over reports
(:func:`cxrl.eval.bootstrap.mean_ci`): the tuned policy beats the anchor by more than the noise of
the held-out sample when the interval's lower end is above zero. With ``samples_per_report`` k > 1
each report is sampled with k fixed noise seeds and its difference is the mean over them, which
narrows the interval at k times the sampling cost (the first seed is the one k = 1 uses).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cxrl import imaging
from cxrl.eval.auroc import mean_auroc, report_targets
from cxrl.eval.bootstrap import mean_ci
from cxrl.infra.retry import call_with_retries
from cxrl.rewards.types import Components, RewardBackend
from cxrl.rl.anchor import FrozenAnchor, direct_total
from cxrl.rl.config import SamplingSettings
from cxrl.rl.policy import Policy
from cxrl.rl.sampler import sample_images
from trainer.report import EvalGrid

log = logging.getLogger(__name__)


def eval_seed(seed: int, report: str, sample: int = 0) -> int:
    """The fixed noise seed of a held-out report's ``sample``-th image."""
    key = f"eval\0{seed}\0{report}" + (f"\0{sample}" if sample else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class Scored:
    images: torch.Tensor  # [N, 1, H, W]
    components: Components  # per image


class Evaluator:
    """Samples and scores the held-out reports; the anchor's side is computed once."""

    def __init__(
        self,
        policy: Policy,
        backend: RewardBackend,
        reports: Sequence[str],
        sampling: SamplingSettings,
        weights: dict[str, float],
        seed: int = 1234,
        grid_prompts: int = 4,
        retries: int = 0,
        backoff_s: float = 1.0,
        samples_per_report: int = 1,
        frozen_anchor: FrozenAnchor | None = None,
    ):
        if len(reports) < 2:
            raise ValueError(f"need at least 2 held-out reports, got {len(reports)}")
        if samples_per_report < 1:
            raise ValueError(f"samples_per_report must be >= 1, got {samples_per_report}")
        self.policy, self.backend = policy, backend
        self.reports = list(reports)
        self.k = samples_per_report
        # image j * n + i is report i with its j-th seed: the first n images are the k = 1 evaluation
        self.items = [r for _ in range(self.k) for r in self.reports]  # [k * n]
        self.seeds = [eval_seed(seed, r, j) for j in range(self.k) for r in self.reports]
        self.sampling, self.weights = sampling, dict(weights)
        self.grid_n = min(grid_prompts, len(self.reports))
        self.retries, self.backoff_s = retries, backoff_s
        self._anchor: Scored | None = None
        self._anchor_grid: torch.Tensor | None = None
        # a private anchor copy lets another thread compute the anchor side during training
        self.frozen_anchor = frozen_anchor
        self._anchor_lock = threading.Lock()

    def _sample(self, reports: list[str], seeds: list[int], anchor: bool) -> torch.Tensor:
        if anchor and self.frozen_anchor is not None:
            return self.frozen_anchor.sample(reports, seeds, self.sampling)  # [N, 1, H, W]
        return sample_images(self.policy, reports, seeds, self.sampling, anchor=anchor)

    def _score(self, images: torch.Tensor, reports: list[str]) -> Components:
        res, _ = call_with_retries(
            lambda: self.backend.score(images, reports),
            self.retries,
            self.backoff_s,
            "evaluation reward call",
        )
        return res.policy

    def _scored(self, anchor: bool) -> Scored:
        images = self._sample(self.items, self.seeds, anchor)
        return Scored(images, self._score(images, self.items))

    def anchor(self) -> Scored:
        """The anchor's side, computed once (a second caller waits for the first)."""
        with self._anchor_lock:
            if self._anchor is None:
                self._anchor = self._scored(anchor=True)
            return self._anchor

    def grid(self, epoch: int) -> EvalGrid:
        """Policy vs anchor images of the first ``grid_prompts`` held-out reports (same noise)."""
        reports, seeds = self.reports[: self.grid_n], self.seeds[: self.grid_n]
        if self._anchor_grid is None:
            self._anchor_grid = (
                self._anchor.images[: self.grid_n] if self._anchor else self._sample(reports, seeds, True)
            )
        policy = self._sample(reports, seeds, anchor=False)
        return EvalGrid(epoch, reports, imaging.encode_pngs(self._anchor_grid), imaging.encode_pngs(policy))

    def evaluate(self, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Metrics of anchor and policy, and the paired difference of the combined reward."""
        anchor, policy = self.anchor(), self._scored(anchor=False)
        targets = report_targets(self.items)  # [k * n, 18]
        out: dict[str, Any] = {}
        per_report = {}
        for name, scored in (("anchor", anchor), ("cxrl", policy)):
            c = scored.components
            total = direct_total(c, self.weights)  # [k * n]
            per_report[name] = total.double().reshape(self.k, len(self.reports)).mean(0).numpy()  # [n]
            out[name] = {
                "r_align": _mean(c.r_align),
                "auroc": mean_auroc(c.diag_probs.double().numpy(), targets).mean
                if c.diag_probs is not None
                else None,
                "clip_similarity": _mean(c.consistency),
                "diag_acc": _mean(c.diag_acc),
                "reward_total": float(total.mean()),
                "n_prompts": len(self.reports),
                "n_images": len(self.items),
            }
        diff = mean_ci(per_report["cxrl"] - per_report["anchor"], n_resamples=bootstrap, seed=seed)
        out["reward_total_diff"] = diff.to_dict()
        out["n_prompts"] = len(self.reports)
        out["samples_per_report"] = self.k
        out["weights"] = self.weights
        return out


def _mean(x: torch.Tensor | None) -> float | None:
    return None if x is None else float(x.float().mean())
