"""`cxrl evaluate ckpt:RUN_DIR` on a finished `cxrl train` run reproduces the run's own eval.json exactly.

The run is built from its config alone (tiny pipeline directory, random in-process reward models,
IU held-out reports), so the command can rebuild every piece from the run directory.
"""

from __future__ import annotations

import json

import pytest

from cxrl.cli import main
from cxrl.models.generator import build_pipeline, tiny_arch
from trainer.config import TrainConfig
from trainer.runner import run_training

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)

RANDOM_MODELS = {
    "posture": {"source": "random"},
    "diagnostic": {"source": "random"},
    "consistency": {"source": "random"},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    build_pipeline(tiny_arch(), seed=0).save_pretrained(root / "pipe")
    cfg = TrainConfig(
        run_name="tiny",
        out_dir=str(root / "runs"),
        preset="cpu-small",
        rl={
            "generator": str(root / "pipe"),
            "epochs": 1,
            "sampling": {"num_steps": 2, "images_per_epoch": 4, "images_per_prompt": 2, "batch_size": 4},
            "train": {"batch_size": 4, "gradient_accumulation_steps": 1},
            "stat_tracker": {"min_count": 2},
        },
        train_prompts=4,
        seed_bank=2,
        progress=False,
        redis={"url": None},
        rewards={"models": RANDOM_MODELS},
        eval={"prompts": 4, "samples_per_report": 2, "grid_prompts": 1, "bootstrap": 50, "seed": 3},
    )
    return run_training(cfg)


def test_evaluate_on_a_run_dir_reproduces_its_eval_json(finished_run, tmp_path):
    ev = json.loads((finished_run.run_dir / "eval.json").read_text())
    assert ev["n_prompts"] == 4 and ev["cxrl"]["n_images"] == 8 and ev["samples_per_report"] == 2
    assert "fid" not in ev["diff"]  # IU reports have no real images: no FID, not a made-up one
    assert set(ev["diff"]) == {"reward_total", "r_align", "auroc", "clip_similarity", "diag_acc", "msssim"}
    # the interval is paired: the combined reward's difference is the difference of the two means
    assert ev["diff"]["reward_total"]["value"] == pytest.approx(
        ev["cxrl"]["reward_total"] - ev["anchor"]["reward_total"]
    )

    out = tmp_path / "again.json"
    spec = f"ckpt:{finished_run.run_dir}"
    assert main(["evaluate", spec, "--json", str(out)]) == 0  # every setting from the run directory
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["anchor", spec]
    assert (
        data["meta"]["prompts"] == 4 and data["meta"]["seed"] == 3 and data["meta"]["samples_per_report"] == 2
    )
    for side, row in (("anchor", rows["anchor"]), ("cxrl", rows[spec])):
        figures = {k: v for k, v in ev[side].items() if k not in ("n_prompts", "n_images")}
        assert figures == {k: e["value"] for k, e in row["metrics"].items()}, side  # exactly
        assert row["info"] == {"prompts": 4, "images": 8}
    assert rows[spec]["diff"] == ev["diff"]  # exactly, intervals included

    # other settings give other figures: the match above is not a coincidence of the format
    assert main(["evaluate", spec, "--json", str(out), "--seed", "4"]) == 0
    other = {r["name"]: r for r in json.loads(out.read_text())["rows"]}[spec]
    assert other["diff"]["reward_total"] != ev["diff"]["reward_total"]
