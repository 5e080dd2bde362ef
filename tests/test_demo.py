"""`cxrl demo` end to end: Redis, `cxrl serve` over gRPC, training, evaluation, outputs, clean shutdown.

Tiny random models keep it to a few minutes; the full `make demo` on the default world is run by
hand (its numbers are in the project report).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cxrl import imaging
from cxrl.models.generator import build_pipeline, tiny_arch

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


@pytest.fixture
def random_serve_config(tmp_path) -> Path:
    cfg = yaml.safe_load((ROOT / "services" / "configs" / "serve-cpu.yaml").read_text())
    for app in cfg["applications"]:
        if "source" in (app.get("args") or {}):
            app["args"]["source"] = "random"
    path = tmp_path / "serve-random.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


REPORTS = [
    "small left pleural effusion.",
    "no acute cardiopulmonary process.",
    "mild cardiomegaly.",
    "right lower lobe pneumonia.",
    "large right pleural effusion.",
    "cardiomegaly with pulmonary edema.",
    "left upper lobe opacity.",
    "normal chest.",
    "no acute disease.",
    "clear lungs, no effusion.",
]


def _dataset(path: Path) -> Path:
    """A dataset directory: 10 train and 10 test records, each with a real image (FID's reference)."""
    g = torch.Generator().manual_seed(0)
    path.mkdir()
    with open(path / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "split", "image", "report", "view"])
        for split in ("train", "test"):
            for i, report in enumerate(REPORTS):
                name = f"{split}-{i}.png"
                imaging.save_image(0.3 + 0.4 * torch.rand(1, 40, 40, generator=g), path / name)
                writer.writerow([f"{split}-{i}", split, name, f"{split} {report}", "PA"])
    return path


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.service
def test_demo_runs_end_to_end_and_stops_everything(tmp_path, random_serve_config):
    gen = tmp_path / "gen"
    build_pipeline(tiny_arch(), seed=0).save_pretrained(gen)
    data = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", CXRL_LOG_LEVEL="INFO")
    sets = [
        f"rl.generator={gen}",
        f"rl.data={data}",  # test reports with real images: FID
        "rewards.models.diagnostic.source=random",  # FID's feature model: the one the services serve
        "rl.epochs=2",
        "rl.sampling.num_steps=3",
        "train_prompts=6",
        "threads=1",
        "rl.sampling.images_per_epoch=8",
        "rl.sampling.images_per_prompt=2",
        "eval.prompts=6",
        "eval.samples_per_report=2",
        "eval.grid_prompts=2",
        "eval.every=1",
        "eval.bootstrap=100",
    ]
    cmd = [
        sys.executable,
        "-m",
        "cxrl.cli",
        "demo",
        "--out",
        str(out),
        "--serve-config",
        str(random_serve_config),
    ]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    for side in ("anchor", "cxrl"):
        for key in ("r_align", "auroc", "clip_similarity", "reward_total"):
            assert key in summary[side]
        assert summary[side]["n_prompts"] == 6 and summary[side]["n_images"] == 12
    assert summary["n_prompts"] == 6
    # paired CXRL - anchor differences: per-report means differ by the difference of the means
    d = summary["diff"]["reward_total"]
    assert d["value"] == pytest.approx(summary["cxrl"]["reward_total"] - summary["anchor"]["reward_total"])
    assert d["low"] <= d["value"] <= d["high"]
    # FID over gRPC too: the diagnostic model of rewards.models is loaded in the trainer for its features
    for key in ("fid", "msssim"):
        assert summary["anchor"][key] > 0 and summary["cxrl"][key] > 0
        assert summary["diff"][key]["low"] <= summary["diff"][key]["value"] <= summary["diff"][key]["high"]
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    # Redis served anchors: epochs draw 4 of 6 reports with both seeds of their bank, so epoch 2 meets
    # at least 2 reports (4 images) of epoch 1 in the cache
    assert summary["history"][1]["cache_hit_rate"] >= 0.5
    page = (out / "report.html").read_text()
    assert "<svg" in page and "data:image/png;base64," in page
    assert all(m in proc.stdout for m in ("combined reward", "AUROC", "FID", "MS-SSIM")), proc.stdout
    assert "does not serve" not in proc.stderr

    # the rewards came over gRPC from the `cxrl serve` it started, and everything it started is gone
    log = proc.stderr
    assert "reward services ready at grpc://127.0.0.1:" in log
    pids = [int(p) for p in re.findall(r"started (?:redis-server|`cxrl serve`) \(pid (\d+)\)", log)]
    assert len(pids) == 2
    assert not any(_alive(p) for p in pids)
    assert "`cxrl serve` stopped" in log and "stopped redis-server" in log
