"""Tables 1 and 2 as markdown and JSON: formatting, layout, round trip, atomic files."""

import json

import pytest

from cxrl.eval import tables
from cxrl.eval.bootstrap import Estimate


def sample_rows():
    anchor = tables.Row(
        "anchor",
        {
            "r_align": Estimate(-0.3634, -0.40, -0.33, 1000),
            "auroc": Estimate(0.65, 0.6, 0.7, 998),
            "clip_similarity": Estimate(0.2851, 0.27, 0.30, 1000),
            "fid": Estimate(2.58, 2.4, 2.8, 1000),
            "msssim": Estimate(0.197, 0.18, 0.21, 1000),
        },
        {"images": 40},
    )
    cxrl = tables.Row(
        "CXRL",
        {
            "r_align": Estimate(-0.246, -0.26, -0.23, 1000),
            "auroc": Estimate(float("nan"), float("nan"), float("nan")),
        },
        diff={
            "reward_total": Estimate(0.5, 0.125, 0.875, 1000),
            "r_align": Estimate(0.1174, 0.08, 0.15, 1000, sd=0.02, n_seeds=3),
        },
    )
    return [anchor, cxrl]


def test_format_cells():
    assert tables.format_estimate(Estimate(-0.3634, -0.4, -0.33)) == "-0.363 [-0.400, -0.330]"
    assert tables.format_estimate(Estimate(1.5, 1.0, 2.0, sd=0.25, n_seeds=3)) == "1.500 ± 0.250"
    assert tables.format_estimate(Estimate(float("nan"), 0, 1)) == "n/a"
    assert tables.format_estimate(None) == "n/a"


def test_markdown_layout():
    text = tables.tables_markdown(sample_rows(), meta={"prompts": 20})
    assert "## Table 1. CXR-specific quality" in text
    assert "## Table 2a. Image quality" in text
    assert "Table 2b" not in text
    assert "- prompts: 20" in text
    assert "Δ: paired difference to the anchor on the same (report, seed) pairs [95% bootstrap" in text
    lines = text.splitlines()
    t1 = lines.index(
        "| Method | Δ combined reward vs anchor | Posture alignment r_align (↑) | Δ r_align"
        " | Classification AUROC (↑) | Δ AUROC | CXR-CLIP similarity (↑) | Δ CXR-CLIP |"
    )
    assert lines[t1 + 1] == "|" + "---|" * 8
    # the anchor is the reference of every Δ; a row without a Δ of some metric shows n/a
    assert lines[t1 + 2] == (
        "| anchor | — | -0.363 [-0.400, -0.330] | — | 0.650 [0.600, 0.700] | — | 0.285 [0.270, 0.300] | — |"
    )
    assert lines[t1 + 3] == (
        "| CXRL | +0.500 [+0.125, +0.875] | -0.246 [-0.260, -0.230] | +0.117 [+0.080, +0.150] sd 0.020"
        " | n/a | n/a | n/a | n/a |"
    )
    assert "| anchor | 2.580 [2.400, 2.800] | — | 0.197 [0.180, 0.210] | — |" in lines
    t2a = lines.index("## Table 2a. Image quality")
    assert not any(line.startswith("| CXRL |") for line in lines[t2a:])  # no FID/MS-SSIM: left out


def test_ablation_table():
    rows = sample_rows()
    abl = [tables.AblationRow("-", "Anchor Model", rows[0]), tables.AblationRow("1", "+ r_align", rows[1])]
    text = tables.tables_markdown(rows, abl)
    assert "| - | Anchor Model | 2.580 [2.400, 2.800] | — | — |" in text
    assert "| 1 | + r_align | n/a | n/a | +0.500 [+0.125, +0.875] |" in text


def test_json_round_trip_and_files(tmp_path):
    rows = sample_rows()
    abl = [tables.AblationRow("-", "Anchor Model", rows[0])]
    md, js = tmp_path / "out" / "t.md", tmp_path / "out" / "t.json"
    text = tables.write_tables(rows, abl, {"seed": 0}, markdown_path=md, json_path=js)
    assert md.read_text() == text
    data = json.loads(js.read_text())  # strict JSON: NaN written as null
    assert data["table2b"] == [{"exp": "-", "reward": "Anchor Model", "row": "anchor"}]
    assert data["rows"][1]["metrics"]["auroc"]["value"] is None
    back = tables.rows_from_json(data)
    assert back[0].metrics == rows[0].metrics and back[0].info == {"images": 40}
    assert back[0].diff is None and back[1].diff == rows[1].diff
    assert sorted(p.name for p in md.parent.iterdir()) == ["t.json", "t.md"]  # no temp files left


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="no generator results"):
        tables.tables_markdown([])
    with pytest.raises(ValueError, match="unknown metrics"):
        tables.markdown_table(sample_rows(), ["psnr"])
