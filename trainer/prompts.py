"""Training reports for a run: a seeded subset of the train split (held-out reports: :mod:`cxrl.eval.heldout`)."""

from __future__ import annotations

import numpy as np


def choose(reports: list[str], n: int | None, seed: int) -> list[str]:
    """A seeded subset of ``n`` reports (all of them when ``n`` is None or too large)."""
    if n is None or n >= len(reports):
        return list(reports)
    idx = np.random.default_rng(seed).choice(len(reports), size=n, replace=False)
    return [reports[i] for i in sorted(idx)]
