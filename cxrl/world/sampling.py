"""Which IU report each world image is rendered from: split by report, then oversample findings.

Rule (recorded in ``sampling.json`` by the builder):

1. Split. The usable IU reports (non-empty impression of at most 74 tokens) are
   shuffled with the world seed and cut by report id: a share
   ``n_test / (n_train + n_test)`` goes to the test split. Every image of a report
   stays in that report's split, so no report crosses splits.
2. Base draws. Within a split, ``ceil((1 - oversample) * n)`` slots (at most one per
   report) take distinct reports in random order; most of these are normal, as in
   the corpus.
3. Oversampling. The remaining slots draw, with replacement, reports that have at
   least one positive or uncertain finding, with probability proportional to
   ``1 / count(rarest such finding among the split's reports)``, so every finding
   gets roughly an equal share of these slots, rare ones (hernia, fracture) included.

Each image is rendered afresh (its own mask, anatomy, posture and noise), so a report
drawn twice gives two different images of the same findings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from cxrl.labels import NO_FINDING

OVERSAMPLE = 0.35


@dataclass(frozen=True)
class Draw:
    """One planned image: index into the split's report list and the repeat number of that report."""

    report: int
    repeat: int


def split_reports(report_ids: list[str], n_train: int, n_test: int, seed: int) -> dict[str, list[int]]:
    """Indices of reports per split ("train", "test"), disjoint, each sorted."""
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise ValueError(f"need a positive number of images, got train={n_train} test={n_test}")
    order = np.random.default_rng([seed, 1]).permutation(len(report_ids))
    n_test_reports = int(round(len(report_ids) * n_test / (n_train + n_test)))
    if n_test > 0:
        n_test_reports = max(1, n_test_reports)
    if n_train > 0:
        n_test_reports = min(n_test_reports, len(report_ids) - 1)
    return {"train": sorted(order[n_test_reports:].tolist()), "test": sorted(order[:n_test_reports].tolist())}


def findings_of(labels: dict[str, int]) -> list[str]:
    """Labels that the image must show (positive or uncertain, not No Finding)."""
    return [k for k, v in labels.items() if v != 0 and k != NO_FINDING]


def plan_split(
    reports: list[int], labels: list[dict[str, int]], n: int, seed: int, split_code: int
) -> tuple[list[Draw], dict]:
    """Plan ``n`` images from ``reports`` (indices into ``labels``). Returns draws and a summary for sampling.json."""
    rng = np.random.default_rng([seed, 2, split_code])
    if n == 0:
        return [], {"images": 0}
    if not reports:
        raise ValueError("no reports in this split; lower n_test or use more reports")
    n_base = min(len(reports), math.ceil((1 - OVERSAMPLE) * n))
    base = rng.permutation(reports)[:n_base].tolist()
    counts = Counter(f for r in reports for f in findings_of(labels[r]))
    abnormal = [r for r in reports if findings_of(labels[r])]
    n_fill = n - n_base
    fill: list[int] = []
    if n_fill > 0:
        if abnormal:
            w = np.array([1.0 / min(counts[f] for f in findings_of(labels[r])) for r in abnormal])
            fill = rng.choice(abnormal, size=n_fill, replace=True, p=w / w.sum()).tolist()
        else:  # nothing abnormal: repeat reports uniformly
            fill = rng.choice(reports, size=n_fill, replace=True).tolist()
    seen: Counter = Counter()
    draws = []
    for r in base + fill:
        draws.append(Draw(int(r), seen[r]))
        seen[r] += 1
    summary = {
        "images": n,
        "reports_in_split": len(reports),
        "abnormal_reports_in_split": len(abnormal),
        "base_draws": n_base,
        "oversampled_draws": n_fill,
        "distinct_reports_used": len(seen),
        "report_finding_counts": dict(sorted(counts.items())),
    }
    return draws, summary
