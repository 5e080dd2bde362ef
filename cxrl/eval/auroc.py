"""Classification AUROC of generated images against their prompts' labels (the paper's Table 1b).

The diagnostic classifier (torchxrayvision DenseNet) scores each generated image; the
targets are the labels our report labeler reads from the prompt that produced it
(``cxrl.reports.labeler.label_report``). Per label we compute ROC AUC over the images whose
target is known, as the Mann-Whitney statistic on average ranks (ties count one half: the value
``sklearn.metrics.roc_auc_score`` gives, at a fraction of its cost inside a bootstrap), and report
the mean over labels that have both classes present (and a classifier output).

Targets (documented choice, configurable):
- positive (1) -> 1, negative (0) -> 0;
- uncertain (-1) -> excluded by default (``uncertain="exclude"``), or mapped to
  1/0 with ``"positive"`` / ``"negative"`` (CheXpert's U-Ones / U-Zeros);
- absent (the report does not mention the label) -> negative by default
  (``absent="negative"``, the usual reading of CheXpert-style labels: a finding
  worth reporting would have been reported), or excluded with ``"exclude"``.
Only the classifier's 18 pathologies are scored; "No Finding" and "Support Devices"
have no classifier output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

from cxrl.labels import NEGATIVE, POSITIVE, UNCERTAIN, XRV_PATHOLOGIES, validate_labels

log = logging.getLogger(__name__)

Uncertain = Literal["exclude", "positive", "negative"]
Absent = Literal["negative", "exclude"]


def label_targets(
    label_dicts: Sequence[dict[str, int]],
    uncertain: Uncertain = "exclude",
    absent: Absent = "negative",
) -> np.ndarray:
    """Labeler outputs (label -> 1/0/-1) -> targets ``[N,18]`` in XRV_PATHOLOGIES order, NaN = excluded."""
    if uncertain not in ("exclude", "positive", "negative"):
        raise ValueError(f"uncertain must be 'exclude', 'positive' or 'negative', got {uncertain!r}")
    if absent not in ("negative", "exclude"):
        raise ValueError(f"absent must be 'negative' or 'exclude', got {absent!r}")
    u_value = {"exclude": np.nan, "positive": 1.0, "negative": 0.0}[uncertain]
    a_value = 0.0 if absent == "negative" else np.nan
    out = np.full((len(label_dicts), len(XRV_PATHOLOGIES)), a_value, dtype=np.float64)
    for i, labels in enumerate(label_dicts):
        validate_labels(labels)
        for j, name in enumerate(XRV_PATHOLOGIES):
            value = labels.get(name)
            if value == POSITIVE:
                out[i, j] = 1.0
            elif value == NEGATIVE:
                out[i, j] = 0.0
            elif value == UNCERTAIN:
                out[i, j] = u_value
    return out


def report_targets(
    reports: Sequence[str], uncertain: Uncertain = "exclude", absent: Absent = "negative"
) -> np.ndarray:
    """Prompts -> targets ``[N,18]`` through the report labeler (see ``label_targets``)."""
    from cxrl.reports.labeler import label_report

    return label_targets([label_report(r) for r in reports], uncertain=uncertain, absent=absent)


@dataclass(frozen=True)
class AurocResult:
    """Mean AUROC over scorable labels, with each label's AUROC (NaN where not scorable)."""

    mean: float
    per_label: dict[str, float]
    n_labels: int  # labels that had both classes and a classifier output


def rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of scores ``s`` for binary targets ``y`` (both classes present): P(s+ > s-) + P(tie) / 2."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((rankdata(s)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_auroc(probs: np.ndarray, targets: np.ndarray, min_per_class: int = 1) -> AurocResult:
    """probs ``[N,18]`` (NaN = no output) and targets ``[N,18]`` (1/0, NaN = excluded) -> AurocResult.

    A label is scored when at least ``min_per_class`` positives and negatives remain
    after dropping rows with NaN probability or target. With no scorable label the
    mean is NaN.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if probs.shape != targets.shape or probs.ndim != 2:
        raise ValueError(
            f"probs and targets must both be [N, L], got {list(probs.shape)} and {list(targets.shape)}"
        )
    if probs.shape[1] != len(XRV_PATHOLOGIES):
        raise ValueError(f"expected {len(XRV_PATHOLOGIES)} label columns, got {probs.shape[1]}")
    known_targets = targets[~np.isnan(targets)]
    if not np.isin(known_targets, (0.0, 1.0)).all():
        raise ValueError("targets must be 1, 0 or NaN")
    per_label: dict[str, float] = {}
    for j, name in enumerate(XRV_PATHOLOGIES):
        keep = ~np.isnan(probs[:, j]) & ~np.isnan(targets[:, j])
        y, s = targets[keep, j], probs[keep, j]
        n_pos = int((y == 1).sum())
        if n_pos < min_per_class or len(y) - n_pos < min_per_class:
            per_label[name] = float("nan")
            continue
        per_label[name] = rank_auc(y, s)
    scored = [v for v in per_label.values() if not np.isnan(v)]
    mean = float(np.mean(scored)) if scored else float("nan")
    return AurocResult(mean=mean, per_label=per_label, n_labels=len(scored))
