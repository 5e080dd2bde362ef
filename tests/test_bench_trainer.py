"""bench.bench_trainer: overlap figures of an epoch and the cold/warm summary over repeats."""

import pytest

from bench.bench_trainer import overlap, summarise_ahead, summarise_runs

PHASES = {"sample": 4.0, "anchor": 3.0, "score": 2.0, "score_wait": 0.5, "train": 2.5, "checkpoint": 0.5}


def test_overlap_ratios():
    o = overlap(PHASES, wall_s=10.5)
    assert o["compute_s"] == pytest.approx(10.0)  # sample + anchor + train + checkpoint
    assert o["overlap_efficiency"] == pytest.approx(1.05)
    assert o["serial_bound"] == pytest.approx(1.2)  # (10 + 2 s of scoring) / 10
    assert o["score_hidden_share"] == pytest.approx(0.75)  # waited 0.5 of 2 s
    assert overlap({**PHASES, "score": 0.0, "score_wait": 0.0}, 10.0)["score_hidden_share"] == 1.0
    with pytest.raises(ValueError, match="positive"):
        overlap({"score": 1.0}, 3.0)


def run(cache, wall, anchor, hit):
    phases = {**PHASES, "anchor": anchor}
    return {
        "cache": cache,
        "wall_s": wall,
        "cpu_s": wall * 1.5,
        "phases_s": phases,
        "cache_hit_rate": hit,
        **overlap(phases, wall),
    }


def test_summarise_runs_takes_medians_and_the_warm_cold_ratio():
    runs = [
        run("cold", 12.0, 3.0, 0.0),
        run("warm", 8.0, 0.0, 1.0),
        run("cold", 14.0, 3.2, 0.0),
        run("warm", 9.0, 0.0, 1.0),
        run("cold", 13.0, 2.8, 0.0),
    ]
    s = summarise_runs(runs)
    assert s["cold"]["wall_s"] == 13.0 and s["warm"]["wall_s"] == 8.5
    assert s["cold"]["phases_s"]["anchor"] == 3.0 and s["warm"]["phases_s"]["anchor"] == 0.0
    assert s["warm_over_cold"] == pytest.approx(8.5 / 13.0)
    assert s["cold"]["cpu_s"] == 19.5 and s["warm_over_cold_cpu"] == pytest.approx(8.5 / 13.0)
    assert s["cold_without_anchor_share"] == pytest.approx(1 - 3.0 / 13.0)
    assert s["warm"]["cache_hit_rate"] == 1.0
    assert s["warm"]["overlap_efficiency"] == pytest.approx(8.5 / 7.0)  # median of 8/7 and 9/7
    with pytest.raises(ValueError, match="no warm-cache epoch"):
        summarise_runs([r for r in runs if r["cache"] == "cold"])


def test_summarise_ahead_takes_medians_and_the_ahead_in_line_ratio():
    runs = [
        {"kind": "inline", "wall_s": 20.0, "anchor_s": 5.0},
        {"kind": "ahead", "wall_s": 16.0, "anchor_s": 1.0},
        {"kind": "inline", "wall_s": 22.0, "anchor_s": 6.0},
        {"kind": "ahead", "wall_s": 15.0, "anchor_s": 0.5},
    ]
    s = summarise_ahead(runs)
    assert s["inline"] == {"wall_s": 21.0, "anchor_s": 5.5} and s["ahead"] == {
        "wall_s": 15.5,
        "anchor_s": 0.75,
    }
    assert s["ahead_over_inline"] == pytest.approx(15.5 / 21.0)
    with pytest.raises(ValueError, match="no ahead anchor run"):
        summarise_ahead(runs[::2])
