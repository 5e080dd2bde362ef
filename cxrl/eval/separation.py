"""Does a row separate from the anchor, and where it does not, what its artefacts say about why.

Recomputed from what `cxrl reproduce` leaves (the paired differences of ``tables.json`` and each
run's checkpointed history), per trained variant:

- ``separated``: the paired bootstrap interval of row − anchor excludes 0;
- ``reports_needed``: held-out reports at which an interval of the same relative width would
  exclude 0 if the observed difference were the true one (the half-width shrinks as 1/sqrt(n),
  so ``n * (half_width / |difference|)^2``): the sample-size explanation, when it is within reach;
- ``seed_se``: the standard error over training seeds (sd / sqrt(seeds)). The bootstrap interval is
  over reports only; when ``seed_se`` is comparable to the half-width, training seeds, not reports,
  limit what the row can show;
- ``train_first`` / ``train_last``: the run's training reward (the engine's ``policy/total``: the
  RLCF reward for comparative variants, the direct total otherwise) averaged over the first and the
  last quarter of its epochs, mean over seeds: whether the policy learned on its own training draws.
  A gain in training with none held out points at overfitting the training draws; no gain in
  training points at the update (learning rate, epochs) or the reward's noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cxrl.eval.bootstrap import Estimate

QUARTER = 0.25


@dataclass(frozen=True)
class Separation:
    metric: str
    difference: float  # row − anchor, mean over seeds
    low: float
    high: float
    separated: bool  # the interval excludes 0
    reports: int  # held-out reports the interval is over
    reports_needed: int | None  # at the observed difference (None: difference 0 or undefined)
    seed_se: float | None  # sd over training seeds / sqrt(seeds); None with one seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reports_needed(est: Estimate, n_reports: int) -> int | None:
    """Reports at which an interval like ``est``'s would exclude 0 at its own point value."""
    if n_reports < 1:
        raise ValueError(f"need at least one report, got {n_reports}")
    half = (est.high - est.low) / 2.0
    if not (math.isfinite(half) and math.isfinite(est.value)) or est.value == 0.0:
        return None
    return math.ceil(n_reports * (half / abs(est.value)) ** 2)


def separation(metric: str, est: Estimate, n_reports: int) -> Separation:
    excludes = math.isfinite(est.low) and math.isfinite(est.high) and (est.low > 0.0 or est.high < 0.0)
    seed_se = None
    if est.sd is not None and est.n_seeds is not None and est.n_seeds > 1:
        seed_se = est.sd / math.sqrt(est.n_seeds)
    return Separation(
        metric, est.value, est.low, est.high, excludes, n_reports, reports_needed(est, n_reports), seed_se
    )


def training_curve(
    histories: Sequence[Sequence[Mapping[str, Any]]], key: str = "policy/total"
) -> dict[str, float]:
    """Mean of ``key`` over the first and the last quarter of each run's epochs, averaged over runs."""
    firsts, lasts = [], []
    for history in histories:
        values = np.array([float(h[key]) for h in history if key in h and math.isfinite(float(h[key]))])
        if len(values) == 0:
            continue
        q = max(1, int(round(len(values) * QUARTER)))
        firsts.append(values[:q].mean())
        lasts.append(values[-q:].mean())
    if not firsts:
        return {}
    return {
        "train_first": float(np.mean(firsts)),
        "train_last": float(np.mean(lasts)),
        "train_gain": float(np.mean(lasts) - np.mean(firsts)),
        "runs": len(firsts),
    }


def markdown(
    rows: Mapping[str, tuple[str, Mapping[str, Estimate]]],
    curves: Mapping[str, Mapping[str, float]],
    n_reports: int,
    metrics: Sequence[str] = ("reward_total", "r_align", "auroc", "clip_similarity"),
) -> tuple[str, dict[str, Any]]:
    """A "Separation from the anchor" section and its JSON: ``rows`` maps slug -> (label, diff)."""
    lines = [
        "## Separation from the anchor",
        "",
        "Per trained variant and metric: Δ vs anchor [95 % paired bootstrap interval over reports]; "
        "whether it excludes 0; the held-out reports an interval would need to exclude 0 if this Δ "
        "were the true one; the standard error of Δ over training seeds. Last columns: the training "
        "reward (first → last quarter of epochs, mean over seeds).",
        "",
        "| Variant | Metric | Δ [interval] | separated | reports needed | seed se | training reward |",
        "|---|---|---|---|---|---|---|",
    ]
    data: dict[str, Any] = {}
    for slug, (label, diff) in rows.items():
        curve = curves.get(slug, {})
        train = (
            f"{curve['train_first']:+.3f} → {curve['train_last']:+.3f}" if "train_first" in curve else "n/a"
        )
        data[slug] = {"label": label, "training": dict(curve), "metrics": {}}
        for m in metrics:
            if m not in diff:
                continue
            s = separation(m, diff[m], n_reports)
            data[slug]["metrics"][m] = s.to_dict()
            needed = "—" if s.separated else ("n/a" if s.reports_needed is None else f"{s.reports_needed:,}")
            se = "n/a" if s.seed_se is None else f"{s.seed_se:.3f}"
            lines.append(
                f"| {label} | {m} | {s.difference:+.3f} [{s.low:+.3f}, {s.high:+.3f}] | "
                f"{'yes' if s.separated else 'no'} | {needed} | {se} | {train} |"
            )
            train = ""  # once per variant
    return "\n".join(lines) + "\n", data
