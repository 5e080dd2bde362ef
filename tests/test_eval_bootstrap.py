"""Bootstrap intervals: seeded, agree with scipy's percentile bootstrap, aggregate over seeds."""

import math

import numpy as np
import pytest
from scipy import stats

from cxrl.eval import bootstrap


def test_mean_ci_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(0)
    values = rng.normal(loc=2.0, scale=1.0, size=400)
    est = bootstrap.mean_ci(values, n_resamples=2000, seed=1)
    ref = stats.bootstrap(
        (values,), np.mean, n_resamples=2000, method="percentile", confidence_level=0.95, random_state=2
    ).confidence_interval
    assert est.value == pytest.approx(values.mean())
    assert est.low == pytest.approx(ref.low, abs=0.02)
    assert est.high == pytest.approx(ref.high, abs=0.02)
    # and the normal-theory width: 2 * 1.96 * sd / sqrt(n) ~ 0.196
    assert est.high - est.low == pytest.approx(2 * 1.96 * values.std(ddof=1) / math.sqrt(400), rel=0.1)


def test_seeded_and_resample_count():
    values = np.arange(30, dtype=float)
    a = bootstrap.mean_ci(values, n_resamples=200, seed=5)
    b = bootstrap.mean_ci(values, n_resamples=200, seed=5)
    c = bootstrap.mean_ci(values, n_resamples=200, seed=6)
    assert a == b
    assert a.low != c.low or a.high != c.high
    assert a.n_resamples == 200 and a.low < a.value < a.high


def test_undefined_resamples_are_dropped():
    # stat undefined when the resample lacks index 0
    est = bootstrap.bootstrap_ci(lambda idx: 1.0 if 0 in idx else float("nan"), n=3, n_resamples=300)
    assert 0 < est.n_resamples < 300
    assert est.low == est.high == 1.0


def test_over_seeds_and_json_round_trip():
    e1 = bootstrap.Estimate(1.0, 0.5, 1.5, 100)
    e2 = bootstrap.Estimate(3.0, 2.5, 3.5, 90)
    agg = bootstrap.over_seeds([e1, e2])
    assert agg.value == 2.0 and agg.low == 1.5 and agg.high == 2.5
    assert agg.sd == pytest.approx(math.sqrt(2.0)) and agg.n_seeds == 2 and agg.n_resamples == 90
    nan_est = bootstrap.Estimate(float("nan"), float("nan"), float("nan"))
    d = nan_est.to_dict()
    assert d["value"] is None
    assert math.isnan(bootstrap.Estimate.from_dict(d).value)
    assert bootstrap.Estimate.from_dict(agg.to_dict()) == agg


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least one prompt"):
        bootstrap.bootstrap_ci(lambda idx: 0.0, n=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap.mean_ci(np.ones(3), confidence=1.5)
    with pytest.raises(ValueError, match="one value per prompt"):
        bootstrap.mean_ci(np.ones((3, 2)))
