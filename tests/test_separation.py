"""Separation from the anchor: interval test, reports needed, seed standard error, training curve."""

import math

import pytest

from cxrl.eval.bootstrap import Estimate
from cxrl.eval.separation import markdown, reports_needed, separation, training_curve


def test_reports_needed_scales_the_half_width_as_one_over_sqrt_n():
    # half-width 0.2 at 100 reports, difference 0.1: the interval must halve -> 4x the reports
    assert reports_needed(Estimate(0.1, -0.1, 0.3), 100) == 400
    # already separated with room: fewer reports would do
    assert reports_needed(Estimate(0.5, 0.3, 0.7), 100) == 16
    assert reports_needed(Estimate(-0.05, -0.15, 0.05), 128) == math.ceil(128 * 4.0)
    assert reports_needed(Estimate(0.0, -0.1, 0.1), 100) is None
    assert reports_needed(Estimate(0.1, float("nan"), float("nan")), 100) is None
    with pytest.raises(ValueError, match="at least one report"):
        reports_needed(Estimate(0.1, 0.0, 0.2), 0)


def test_separation_and_seed_standard_error():
    s = separation("auroc", Estimate(-0.02, -0.03, -0.01, sd=0.03, n_seeds=3), 128)
    assert s.separated and s.seed_se == pytest.approx(0.03 / math.sqrt(3))
    t = separation("reward_total", Estimate(0.05, -0.06, 0.17), 256)
    assert not t.separated and t.seed_se is None
    assert t.reports_needed == math.ceil(256 * (0.115 / 0.05) ** 2)


def test_training_curve_takes_the_first_and_last_quarter_of_each_run():
    run_a = [{"policy/total": v} for v in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)]  # quarter = 2 epochs
    run_b = [{"policy/total": v} for v in (1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0)]
    curve = training_curve([run_a, run_b])
    assert curve["train_first"] == pytest.approx((0.5 + 1.0) / 2)
    assert curve["train_last"] == pytest.approx((6.5 + 3.0) / 2)
    assert curve["train_gain"] == pytest.approx(4.0) and curve["runs"] == 2
    assert training_curve([[{"loss": 1.0}]]) == {}
    assert training_curve([[{"policy/total": float("nan")}, {"policy/total": 2.0}]])["train_first"] == 2.0


def test_markdown_lists_every_metric_and_marks_what_separates():
    diff = {"reward_total": Estimate(0.3, 0.1, 0.5, sd=0.1, n_seeds=3), "auroc": Estimate(0.01, -0.02, 0.04)}
    text, data = markdown(
        {"cxrl": ("CXRL", diff)},
        {"cxrl": training_curve([[{"policy/total": 0.0}, {"policy/total": 1.0}]])},
        96,
    )
    assert "| CXRL | reward_total | +0.300 [+0.100, +0.500] | yes | — | 0.058 | +0.000 → +1.000 |" in text
    assert "| CXRL | auroc | +0.010 [-0.020, +0.040] | no | 864 | n/a |  |" in text
    assert data["cxrl"]["metrics"]["auroc"]["reports_needed"] == 864
    assert data["cxrl"]["training"]["train_gain"] == 1.0
