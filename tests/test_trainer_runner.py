"""trainer.runner: a whole run (train, grids, held-out evaluation, report, registry) on tiny models."""

from __future__ import annotations

import json
import re

import pytest
import torch
from _grpc_gateway import grpc_gateway

from cxrl import imaging
from cxrl.infra.redis_local import LocalRedis
from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import RewardModelsConfig, random_scorers
from cxrl.rl.policy import Policy
from trainer.cli import format_table, scan_run_dirs
from trainer.config import RewardClientSettings, TrainConfig
from trainer.demo import summary_of
from trainer.runner import load_grids, run_training
from trainer.store import RunStore, connect

TRAIN = [
    "small left pleural effusion.",
    "no acute cardiopulmonary process.",
    "mild cardiomegaly.",
    "right lower lobe pneumonia.",
]
TEST = [
    "large right pleural effusion.",
    "no acute disease.",
    "cardiomegaly with pulmonary edema.",
    "left upper lobe opacity.",
    "normal chest.",
]
RANDOM_MODELS = {
    "posture": {"source": "random"},
    "diagnostic": {"source": "random"},
    "consistency": {"source": "random"},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


def _config(tmp_path, redis_url=None, epochs=2) -> TrainConfig:
    return TrainConfig(
        run_name="tiny",
        out_dir=str(tmp_path / "runs"),
        preset="cpu-small",
        rl={
            "epochs": epochs,
            "sampling": {"num_steps": 3, "images_per_epoch": 8, "images_per_prompt": 2, "batch_size": 4},
            "train": {"batch_size": 4, "gradient_accumulation_steps": 1},
            "stat_tracker": {"min_count": 2},
        },
        seed_bank=2,
        progress=False,
        redis={"url": redis_url, "prefix": "runner"},
        eval={"prompts": 4, "grid_prompts": 2, "every": 1, "bootstrap": 50},
    )


def _objects(cfg):
    rl = cfg.rl_config()
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    p, d, c = random_scorers(0)
    return policy, InProcessRewards(p, d, c, weights=rl.rewards.weights, rlcf=False)


@pytest.mark.service
def test_run_writes_eval_report_grids_and_registers(tmp_path):
    with LocalRedis() as url:
        cfg = _config(tmp_path, url)
        policy, backend = _objects(cfg)
        result = run_training(cfg, policy=policy, backend=backend, prompts=(TRAIN, TEST), gen_id="tiny")
        run = RunStore(connect(url), prefix="runner").get("tiny")
        assert run.status == "finished" and run.epoch == 1
        assert run.latest["cache_hit_rate"] > 0

    assert [m["epoch"] for m in result.history] == [0, 1]
    ev = json.loads((result.run_dir / "eval.json").read_text())
    for side in ("anchor", "cxrl"):
        for key in ("r_align", "auroc", "clip_similarity", "reward_total"):
            assert key in ev[side]
        assert ev[side]["n_prompts"] == 4
    # paired differences of every metric; per-report means: difference of the means, interval around it
    for key in ("reward_total", "r_align", "clip_similarity", "diag_acc"):
        d = ev["diff"][key]
        assert d["value"] == pytest.approx(ev["cxrl"][key] - ev["anchor"][key]), key
        assert d["low"] <= d["value"] <= d["high"] and d["n_resamples"] == 50
    assert "fid" not in ev["diff"] and "msssim" not in ev["diff"]  # no real images, one image per report
    # grids at epochs 0, 1 and 2 (every=1), two reports each, anchor images identical across epochs
    grids = load_grids(result.run_dir)
    assert [g.epoch for g in grids] == [0, 1, 2]
    assert all(g.anchor_png == grids[0].anchor_png for g in grids)
    page = result.report.read_text()
    assert page.count("data:image/png;base64,") == 2 * (1 + 3)
    assert "CXRL, epoch 2" in page and "reward_total" in page


def test_run_without_redis_and_resume(tmp_path, caplog):
    cfg = _config(tmp_path, None, epochs=1)
    policy, backend = _objects(cfg)
    first = run_training(cfg, policy=policy, backend=backend, prompts=(TRAIN, TEST), gen_id="tiny")
    assert "no Redis configured" in caplog.text
    assert "set but not used" not in caplog.text  # in process, with no gateway setting given
    assert "cache_hit_rate" not in first.history[0]
    # a second run with more epochs resumes from the checkpoint and trains only the new epoch
    cfg2 = _config(tmp_path, None, epochs=2)
    cfg2.rewards = RewardClientSettings(retries=2)  # a gateway setting, in process: said to be unused
    policy2, backend2 = _objects(cfg2)
    second = run_training(cfg2, policy=policy2, backend=backend2, prompts=(TRAIN, TEST), gen_id="tiny")
    assert "rewards.retries=2 set but not used: rewards.url is inprocess" in caplog.text
    assert [m["epoch"] for m in second.history] == [0, 1]
    assert second.history[0] == first.history[0]
    lines = (second.run_dir / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2
    runs = scan_run_dirs([str(tmp_path / "runs")])
    assert runs[0]["run_id"] == "tiny" and runs[0]["status"] == "finished" and runs[0]["epoch"] == 1


def _dataset(path):
    """A dataset directory of the TRAIN and TEST reports, each with a real image (FID's reference)."""
    g = torch.Generator().manual_seed(0)
    path.mkdir()
    rows = []
    for split, reports in (("train", TRAIN), ("test", TEST)):
        for i, report in enumerate(reports):
            imaging.save_image(0.3 + 0.4 * torch.rand(1, 40, 40, generator=g), path / f"{split}-{i}.png")
            rows.append(f"{split}-{i},{split},{split}-{i}.png,{report},PA")
    (path / "metadata.csv").write_text("id,split,image,report,view\n" + "\n".join(rows) + "\n")
    return str(path)


def test_over_grpc_the_evaluation_has_the_fid_an_in_process_run_has(tmp_path):
    # the same run twice, rewards over gRPC (random_scorers(0) behind the gateway) and in process:
    # over gRPC the diagnostic model of rewards.models is loaded here for FID; the anchor's images are
    # the same in both runs, so its FID (and the real images' reference) must be the same
    def run(name, url):
        cfg = _config(tmp_path, None, epochs=1).model_copy(update={"run_name": name})
        cfg.rl["data"] = _dataset(tmp_path / f"data-{name}")
        cfg.rewards.url, cfg.rewards.models = url, RewardModelsConfig(**RANDOM_MODELS)
        cfg.eval.samples_per_report, cfg.eval.grid_prompts = 2, 0
        policy, backend = _objects(cfg)
        return cfg, run_training(cfg, policy=policy, backend=None if url != "inprocess" else backend)

    with grpc_gateway(seed=0) as url:
        cfg, remote = run("grpc", url)
    _, local = run("local", "inprocess")
    ev, want = remote.evaluation, local.evaluation
    assert ev["anchor"]["fid"] > 0 and ev["cxrl"]["fid"] > 0
    assert ev["anchor"]["fid"] == pytest.approx(want["anchor"]["fid"], rel=1e-9)
    assert ev["diff"]["fid"]["value"] == pytest.approx(ev["cxrl"]["fid"] - ev["anchor"]["fid"])
    # what `cxrl demo` shows of it: summary.json and the stdout table, with the paired interval
    summary = summary_of(remote, cfg)
    for key in ("fid", "msssim"):
        assert summary["anchor"][key] == ev["anchor"][key] and summary["cxrl"][key] == ev["cxrl"][key]
        assert summary["diff"][key]["low"] <= summary["diff"][key]["high"]
    table = format_table(ev)
    assert re.search(r"^FID +\d+\.\d{4} +\d+\.\d{4} +[+-]\d+\.\d{4} \[", table, re.M), table
    assert re.search(r"^MS-SSIM +\d\.\d{4} +\d\.\d{4} +[+-]\d\.\d{4} \[", table, re.M), table
    page = remote.report.read_text()  # the run report's final metrics: both sides and the paired CI
    assert "<td>fid</td>" in page and "<td>msssim</td>" in page


def test_reconcile_history_keeps_checkpointed_epochs_once(tmp_path):
    from trainer.runner import reconcile_history

    history = [
        {"epoch": 0, "loss": 0.5, "time/checkpoint": 0.0},
        {"epoch": 1, "loss": 0.25, "time/checkpoint": 0.0},
    ]
    logged = [
        json.dumps({"epoch": 0, "loss": 0.5, "time/checkpoint": 0.01}),  # agrees: kept as written
        json.dumps({"epoch": 1, "loss": 9.0}),  # disagrees with the checkpoint: rewritten from it
        json.dumps({"epoch": 2, "loss": 0.1}),  # after the checkpoint: trained again, so dropped
        '{"epoch": 3, "lo',  # cut short by a kill
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(logged))
    reconcile_history(tmp_path, history)
    lines = path.read_text().splitlines()
    assert lines == [logged[0], json.dumps(history[1])]
    before = path.stat().st_mtime_ns
    reconcile_history(tmp_path, history)  # already consistent: not rewritten
    assert path.stat().st_mtime_ns == before
    reconcile_history(tmp_path / "fresh", [])  # nothing logged, nothing checkpointed: nothing written
    assert not (tmp_path / "fresh" / "history.jsonl").exists()
