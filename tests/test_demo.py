"""`cxrl demo` end to end: Redis, `cxrl serve` over gRPC, training, evaluation, outputs, clean shutdown.

Tiny random models keep it to a few minutes; the full `make demo` on the default world is run by
hand (its numbers are in the project report).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.service
def test_demo_runs_end_to_end_and_stops_everything(tmp_path, random_serve_config):
    gen = tmp_path / "gen"
    build_pipeline(tiny_arch(), seed=0).save_pretrained(gen)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", CXRL_LOG_LEVEL="INFO")
    sets = [
        f"rl.generator={gen}",
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
    assert (
        "fid" not in summary["diff"] and "msssim" in summary["diff"]
    )  # rewards over gRPC: no FID model here
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    # Redis served anchors: epochs draw 4 of 6 reports with both seeds of their bank, so epoch 2 meets
    # at least 2 reports (4 images) of epoch 1 in the cache
    assert summary["history"][1]["cache_hit_rate"] >= 0.5
    page = (out / "report.html").read_text()
    assert "<svg" in page and "data:image/png;base64," in page
    assert "combined reward" in proc.stdout and "AUROC" in proc.stdout

    # the rewards came over gRPC from the `cxrl serve` it started, and everything it started is gone
    log = proc.stderr
    assert "reward services ready at grpc://127.0.0.1:" in log
    pids = [int(p) for p in re.findall(r"started (?:redis-server|`cxrl serve`) \(pid (\d+)\)", log)]
    assert len(pids) == 2
    assert not any(_alive(p) for p in pids)
    assert "`cxrl serve` stopped" in log and "stopped redis-server" in log
