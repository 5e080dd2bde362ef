"""trainer.report: a self-contained HTML page with SVG curves, image grids and the metrics table."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrl import imaging
from trainer.report import EvalGrid, line_chart, metrics_table, render_report, write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _history(n: int = 4) -> list[dict]:
    return [
        {
            "epoch": e,
            "policy/total": 0.1 * e,
            "anchor/total": -0.05,
            "policy/r_align": -0.3 + 0.02 * e,
            "anchor/r_align": -0.3,
            "policy/diag_acc": 0.5 + 0.03 * e,
            "anchor/diag_acc": 0.5,
            "policy/consistency": 0.2 + 0.01 * e,
            "anchor/consistency": 0.2,
            "approx_kl": 1e-4 * e,
            "clipfrac": 0.1,
            "cache_hit_rate": 0.0 if e == 0 else 0.75,
        }
        for e in range(n)
    ]


def _grid(epoch: int, n: int = 2) -> EvalGrid:
    g = torch.Generator().manual_seed(epoch)
    # bright, structured images so a screenshot shows them
    base = torch.linspace(0, 1, 32).repeat(32, 1)[None, None]  # [1,1,32,32] horizontal ramp
    anchor = (base.expand(n, 1, 32, 32) * 0.9 + 0.1 * torch.rand(n, 1, 32, 32, generator=g)).clamp(0, 1)
    policy = anchor.flip(-1)
    return EvalGrid(
        epoch=epoch,
        reports=[f"No acute cardiopulmonary abnormality <{i}> & more" for i in range(n)],
        anchor_png=imaging.encode_pngs(anchor),
        policy_png=imaging.encode_pngs(policy),
    )


FINAL = {
    "anchor": {
        "r_align": -0.31,
        "auroc": 0.61,
        "clip_similarity": 0.20,
        "reward_total": -0.31,
        "n_prompts": 32,
    },
    "cxrl": {"r_align": -0.22, "auroc": 0.66, "clip_similarity": 0.24, "reward_total": 0.55, "n_prompts": 32},
}


def test_page_is_self_contained_with_curves_grids_and_table():
    page = render_report(
        title="run <x>", history=_history(), grids=[_grid(0), _grid(3)], final=FINAL, meta={"run": "r1"}
    )
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']https?:""", page), "nothing may be fetched"
    assert (
        page.count("<svg") == 9
    )  # 4 reward charts + 3 optimisation + 2 group diagnostics (no grad_eps keys)
    for key in ("policy/r_align", "anchor/r_align", "policy/diag_acc", "policy/consistency", "policy/total"):
        assert key in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 6  # 2 reports x (anchor once + policy at each of 2 evaluations)
    decoded = imaging.decode_png(base64.b64decode(images[0]))
    assert decoded.shape == (1, 32, 32)
    assert "run &lt;x&gt;" in page and "&lt;0&gt; &amp; more" in page  # escaped
    assert "CXRL, epoch 0" in page and "CXRL, epoch 3" in page
    for cell in ("reward_total", "0.5500", "-0.3100", "32"):
        assert cell in page


def test_diagnostics_chart_zero_spread_groups_and_the_gradient_of_each_trained_step():
    history = [
        {
            "epoch": e,
            "zero_spread_groups": 0.5 - 0.25 * e,
            "group_size": 8.0,
            "grad_eps/step_01": 2.0 + e,
            "grad_eps/step_02": 1.0,
        }
        for e in range(3)
    ]
    page = render_report(title="t", history=history)
    assert page.count("<svg") == 10  # ... and the gradient chart, since the history has grad_eps keys
    charts = {
        re.search(r'aria-label="([^"]+)"', svg).group(1): svg for svg in re.findall(r"<svg.*?</svg>", page)
    }
    zero = charts["Report groups with zero reward spread (no signal)"]
    assert ">zero_spread_groups<" in zero and len(re.findall("<circle", zero)) == 3
    grad = charts["Gradient norm of the noise prediction, by trajectory step"]
    assert ">step 01<" in grad and ">step 02<" in grad and ">step 00<" not in grad  # the trained steps only
    lines = re.findall(r'<polyline points="([^"]+)"', grad)
    ys = [[float(p.split(",")[1]) for p in line.split()] for line in lines]
    assert ys[0][0] > ys[0][1] > ys[0][2]  # step 01 rises (SVG y grows downwards) ...
    assert len(set(ys[1])) == 1  # ... step 02 is flat


def test_chart_polylines_follow_the_data():
    svg = line_chart("t", {"policy/x": [(0, 0.0), (1, 1.0), (2, 2.0)], "anchor/x": [(0, 1.0), (2, 1.0)]})
    lines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert len(lines) == 2
    pts = [tuple(map(float, p.split(","))) for p in lines[0].split()]
    ys = [y for _, y in pts]
    assert ys[0] > ys[1] > ys[2]  # rising values are drawn upwards (svg y grows down)
    assert "stroke-dasharray" in svg.split("<polyline")[2]  # anchor is dashed
    assert line_chart("empty", {"policy/x": []}).count("no data") == 1


def test_nan_values_are_skipped_and_table_shows_na():
    svg = line_chart("t", {"policy/x": [(0, 1.0), (1, float("nan")), (2, 3.0)]})
    assert "nan" not in svg.lower().replace("no data", "")
    table = metrics_table({"anchor": {"auroc": float("nan")}})
    assert "n/a" in table


def test_grid_checks_lengths():
    with pytest.raises(ValueError, match="one of each per report"):
        EvalGrid(epoch=0, reports=["a", "b"], anchor_png=[b"x"], policy_png=[b"x", b"y"])


def test_grids_must_share_reports():
    other = _grid(1)
    other.reports = ["another report", "and another"]
    with pytest.raises(ValueError, match="other reports"):
        render_report(title="t", history=[], grids=[_grid(0), other])


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    path = write_report(tmp_path / "r" / "report.html", title="t", history=_history(2))
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


@pytest.mark.browser
def test_renders_in_headless_chromium(tmp_path):
    assert CHROMIUM, "needs Debian's chromium: `make browser` (apt-get install -y chromium) installs it"
    path = write_report(
        tmp_path / "report.html", title="CXRL run report", history=_history(), grids=[_grid(0)], final=FINAL
    )
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        path.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)  # [H, W, 3]
    assert img.shape[:2] == (1600, 1200)
    # the policy curves are drawn in #c0392b: many pixels of that red mean the SVG charts rendered
    red = (abs(img[..., 0] - 0xC0) < 30) & (abs(img[..., 1] - 0x39) < 30) & (abs(img[..., 2] - 0x2B) < 30)
    assert red.sum() > 200
    # the grid images are grey ramps shown at 128 px: ~90k mid-grey pixels (text and
    # chart lines alone give ~15k)
    grey = (np.ptp(img, axis=2) < 6) & (img[..., 0] > 40) & (img[..., 0] < 200)
    assert grey.sum() > 50000
