"""What an evaluation measures per image, and the metrics and paired differences made of it.

A :class:`Scored` holds one generator's per-image measurements on the held-out reports (and is
saved next to a run as ``scores.npz``, so every table figure can be recomputed from it). Metrics
(Han et al., MICCAI 2024, Sec. 3.1; each a function of a set of report indices, so a bootstrap
resamples reports and a report keeps all its images):

- ``reward_total``: mean over reports of ``w_align * r_align + w_diag * acc + w_consist * cos``
  (the run's weights); policy − anchor of it is the policy's mean RLCF reward, the anchor terms
  cancelling;
- ``r_align``: mean posture reward; ``diag_acc``: mean share of the report's labels the classifier
  gets right; ``clip_similarity``: mean CXR-CLIP image-report cosine (means of per-report means);
- ``auroc``: mean per-label AUROC of the classifier on all images against the labels of their
  reports (:mod:`cxrl.eval.auroc`);
- ``fid``: Fréchet distance of the images' xrv features to the real test images' (:mod:`cxrl.eval.fid`);
  only with real images and a feature model (:func:`cxrl.eval.evaluate.feature_model`);
- ``msssim``: mean over reports of the mean pairwise MS-SSIM of a report's images (needs K >= 2).

:func:`paired_difference` is the percentile bootstrap of policy − anchor on the same resampled
reports (one seeded resampling shared by every metric); with several policies (training seeds)
the difference is their mean, and the estimate carries the standard deviation over them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrl.eval import auroc
from cxrl.eval.bootstrap import Estimate, bootstrap_ci
from cxrl.eval.fid import FrechetReference
from cxrl.eval.heldout import HeldOutConfig
from cxrl.rewards.types import REWARDS

log = logging.getLogger(__name__)

PER_IMAGE: tuple[str, ...] = ("reward_total", *(r.eval_metric for r in REWARDS))  # per-image eval values
METRICS: tuple[str, ...] = (
    "reward_total",
    "r_align",
    "auroc",
    "clip_similarity",
    "diag_acc",
    "fid",
    "msssim",
)
Stat = Callable[[np.ndarray], float]  # report indices (with repeats) -> metric value


@dataclass
class Scored:
    """One generator's measurements on N held-out reports (M images)."""

    name: str
    reports: list[str]  # [N]
    image_prompt: np.ndarray  # [M] index of each image's report
    values: dict[str, np.ndarray]  # PER_IMAGE name -> [M]; a name is absent when not computed
    probs: np.ndarray | None  # [M, 18] calibrated classifier outputs
    features: np.ndarray | None  # [M, D] xrv features2 (FID), None without a feature model
    msssim: np.ndarray  # [N] mean pairwise MS-SSIM of a report's images (NaN with one image)
    size: tuple[int, int] | None  # (H, W) of every image; None when sizes differ

    @property
    def n_prompts(self) -> int:
        return len(self.reports)

    def save(self, path: str | Path) -> None:
        arrays = {f"value_{k}": v for k, v in self.values.items()}
        if self.probs is not None:
            arrays["probs"] = self.probs
        if self.features is not None:
            arrays["features"] = self.features
        with open(path, "wb") as fh:
            np.savez(
                fh,
                name=np.array(self.name),
                reports=np.array(self.reports, dtype=object).astype(str),
                image_prompt=self.image_prompt,
                msssim=self.msssim,
                size=np.array(self.size if self.size else (-1, -1)),
                **arrays,
            )

    @classmethod
    def load(cls, path: str | Path) -> Scored:
        with np.load(path) as z:
            size = tuple(int(s) for s in z["size"])
            return cls(
                str(z["name"]),
                [str(r) for r in z["reports"]],
                z["image_prompt"],
                {k[6:]: z[k] for k in z.files if k.startswith("value_")},
                z["probs"] if "probs" in z.files else None,
                z["features"] if "features" in z.files else None,
                z["msssim"],
                size if size[0] > 0 else None,
            )


def statistics(
    scored: Scored, cfg: HeldOutConfig, reference: FrechetReference | None = None
) -> dict[str, Stat]:
    """Each metric ``scored`` has, as a function of report indices."""
    n = scored.n_prompts
    rows_of = [np.flatnonzero(scored.image_prompt == i) for i in range(n)]  # report -> its image rows
    if any(len(r) == 0 for r in rows_of):
        raise ValueError(f"{scored.name}: some reports have no image")

    def rows(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([rows_of[i] for i in idx])

    def mean_of(per_report: np.ndarray) -> Stat:
        return lambda idx: float(per_report[idx].mean())

    stats: dict[str, Stat] = {}
    for name, values in scored.values.items():
        stats[name] = mean_of(np.array([values[r].astype(np.float64).mean() for r in rows_of]))
    if scored.probs is not None:
        targets = auroc.report_targets(scored.reports, cfg.uncertain, cfg.absent)[
            scored.image_prompt
        ]  # [M, 18]
        probs = scored.probs
        stats["auroc"] = lambda idx: auroc.mean_auroc(probs[rows(idx)], targets[rows(idx)]).mean
    if np.isfinite(scored.msssim).any():
        ms = scored.msssim
        stats["msssim"] = lambda idx: float(np.nanmean(ms[idx])) if np.isfinite(ms[idx]).any() else np.nan
    if reference is not None and scored.features is not None:
        feats = scored.features
        stats["fid"] = lambda idx: reference.distance(feats[rows(idx)])
    return {k: stats[k] for k in METRICS if k in stats}


def metrics(
    scored: Scored, cfg: HeldOutConfig, reference: FrechetReference | None = None
) -> dict[str, Estimate]:
    """Every metric of one generator with its bootstrap interval over reports."""
    n = scored.n_prompts
    return {
        name: bootstrap_ci(stat, n, cfg.bootstrap, cfg.confidence, cfg.seed)
        for name, stat in statistics(scored, cfg, reference).items()
    }


def paired_difference(
    policies: Sequence[Scored],
    anchor: Scored,
    cfg: HeldOutConfig,
    reference: FrechetReference | None = None,
) -> dict[str, Estimate]:
    """policy − anchor of every metric both have, on the same resampled reports.

    ``policies`` (one per training seed) were evaluated on the anchor's reports; the difference of
    a resample is the mean over them of (policy − anchor) on it. With several policies the estimate's
    ``sd`` is the standard deviation over them of their own difference on all reports.
    """
    if not policies:
        raise ValueError("no policy to compare with the anchor")
    for p in policies:
        if p.reports != anchor.reports:
            raise ValueError(
                f"{p.name} was evaluated on other reports than {anchor.name}; pairs need the same"
            )
    base = statistics(anchor, cfg, reference)
    each = [statistics(p, cfg, reference) for p in policies]
    n, out = anchor.n_prompts, {}
    for name in base:
        if not all(name in s for s in each):
            continue

        def diff(idx: np.ndarray, name: str = name) -> float:
            return float(np.mean([s[name](idx) for s in each]) - base[name](idx))

        est = bootstrap_ci(diff, n, cfg.bootstrap, cfg.confidence, cfg.seed)
        if len(policies) > 1:
            everything = np.arange(n)
            per_seed = np.array([s[name](everything) for s in each]) - base[name](everything)
            est = Estimate(
                est.value,
                est.low,
                est.high,
                est.n_resamples,
                est.confidence,
                float(per_seed.std(ddof=1)),
                len(policies),
            )
        out[name] = est
    return out
