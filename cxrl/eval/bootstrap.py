"""Confidence intervals by bootstrapping over prompts (percentile method, seeded).

A metric is a function of a set of prompt indices (each prompt carries all the images
generated for it), so resampling prompts with replacement keeps a prompt's samples
together. The point estimate is the metric on all prompts; the interval is the
``(1-c)/2`` and ``(1+c)/2`` percentiles of the metric over resamples (Efron &
Tibshirani, 1993, ch. 13). Resamples on which the metric is undefined (NaN, e.g. an
AUROC with no label having both classes) are dropped and counted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Estimate:
    """A metric value with its interval. ``sd``/``n_seeds`` are set when aggregated over seeds."""

    value: float
    low: float
    high: float
    n_resamples: int = 0  # bootstrap resamples that gave a finite value
    confidence: float = 0.95
    sd: float | None = None  # standard deviation over seeds
    n_seeds: int | None = None

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Estimate:
        nan = float("nan")
        fields = {k: (nan if v is None and k in ("value", "low", "high") else v) for k, v in data.items()}
        return cls(**fields)


def bootstrap_ci(
    stat: Callable[[np.ndarray], float],
    n: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile interval of ``stat(indices)`` over ``n_resamples`` resamples of ``range(n)``."""
    if n < 1:
        raise ValueError(f"need at least one prompt to bootstrap, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    value = float(stat(np.arange(n)))
    rng = np.random.default_rng(seed)
    draws = [float(stat(rng.integers(0, n, size=n))) for _ in range(n_resamples)]
    finite = np.array([d for d in draws if math.isfinite(d)])
    if len(finite) < len(draws):
        log.debug("bootstrap: %d of %d resamples undefined", len(draws) - len(finite), len(draws))
    if len(finite) == 0:
        return Estimate(value, float("nan"), float("nan"), 0, confidence)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Estimate(value, float(low), float(high), len(finite), confidence)


def mean_ci(values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Bootstrap interval of the mean of per-prompt values ``[N]``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"expected one value per prompt, got shape {list(values.shape)}")
    return bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), n_resamples, confidence, seed)


def over_seeds(estimates: list[Estimate]) -> Estimate:
    """Aggregate one metric over seeds: mean of values, interval = mean of the seeds' bounds, sd over seeds."""
    if not estimates:
        raise ValueError("no per-seed estimates to aggregate")
    values = np.array([e.value for e in estimates], dtype=np.float64)
    lows = np.array([e.low for e in estimates], dtype=np.float64)
    highs = np.array([e.high for e in estimates], dtype=np.float64)
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return Estimate(
        value=float(values.mean()),
        low=float(lows.mean()),
        high=float(highs.mean()),
        n_resamples=int(min(e.n_resamples for e in estimates)),
        confidence=estimates[0].confidence,
        sd=sd,
        n_seeds=len(estimates),
    )
