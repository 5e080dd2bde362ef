"""Training and held-out reports for a run.

With a dataset directory (``rl.data``: a default world or a MIMIC-CXR-JPG selection) the reports
of its train and test records are used. Without one, the IU impressions shipped in the
torchxrayvision wheel are split exactly as the default world splits them
(:func:`cxrl.world.sampling.split_reports` with the world's counts and seed), so the demo needs no
built world and never trains on a held-out report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cxrl.world.build import WorldConfig
from cxrl.world.sampling import findings_of

log = logging.getLogger(__name__)


def split_reports(data: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(train reports, test reports), each de-duplicated in a stable order."""
    if data is not None:
        from cxrl.world.dataset import load_records

        train = [r.report for r in load_records(data, "train")]
        test = [r.report for r in load_records(data, "test")]
    else:
        from cxrl.world.corpus import load_iu_reports
        from cxrl.world.sampling import split_reports as split_ids

        world = WorldConfig()
        reports = load_iu_reports()
        idx = split_ids([r.report_id for r in reports], world.n_train, world.n_test, world.seed)
        train = [reports[i].impression for i in idx["train"]]
        test = [reports[i].impression for i in idx["test"]]
    train, test = list(dict.fromkeys(train)), list(dict.fromkeys(test))
    overlap = set(train) & set(test)
    if overlap:  # the same impression text under two report ids: keep it out of training
        train = [r for r in train if r not in overlap]
    if not train or not test:
        raise ValueError(f"need train and test reports, got {len(train)} and {len(test)} (data={data})")
    return train, test


def choose(reports: list[str], n: int | None, seed: int) -> list[str]:
    """A seeded subset of ``n`` reports (all of them when ``n`` is None or too large)."""
    if n is None or n >= len(reports):
        return list(reports)
    idx = np.random.default_rng(seed).choice(len(reports), size=n, replace=False)
    return [reports[i] for i in sorted(idx)]


def choose_held_out(reports: list[str], n: int, with_findings: float, seed: int) -> list[str]:
    """``n`` held-out reports: a share ``with_findings`` among those the labeler finds findings in.

    Most impressions are normal; mixing in reports with findings lets classification AUROC be
    computed for more labels.
    """
    from cxrl.reports.labeler import label_report

    positive = [r for r in reports if findings_of(label_report(r))]
    pos = set(positive)
    normal = [r for r in reports if r not in pos]
    k = min(len(positive), int(round(n * with_findings)))
    rng = np.random.default_rng([seed, 7])
    chosen = [positive[i] for i in rng.choice(len(positive), size=k, replace=False)] if k else []
    rest = min(len(normal), n - k)
    chosen += [normal[i] for i in rng.choice(len(normal), size=rest, replace=False)] if rest else []
    if len(chosen) < n:
        log.warning("only %d held-out reports available (asked for %d)", len(chosen), n)
    return chosen
