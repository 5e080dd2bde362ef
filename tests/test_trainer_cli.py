"""trainer.cli: `cxrl runs` (registry and run directories) and the result table."""

from __future__ import annotations

import json

import pytest
import redis

from cxrl.cli import main
from cxrl.infra.redis_local import LocalRedis
from trainer.cli import format_table
from trainer.store import RunStore

EVAL = {
    "n_prompts": 48,
    "anchor": {"r_align": -0.30, "auroc": 0.60, "clip_similarity": 0.20, "reward_total": 4.0},
    "cxrl": {"r_align": -0.25, "auroc": 0.64, "clip_similarity": 0.22, "reward_total": 4.6},
    "diff": {
        "reward_total": {"value": 0.6, "low": 0.3, "high": 0.9},
        "auroc": {"value": 0.04, "low": -0.01, "high": 0.09},
    },
}


def test_table_has_every_metric_and_the_interval():
    text = format_table(EVAL)
    assert "held-out reports: 48" in text
    assert "AUROC" in text and "0.6000" in text and "+0.0400 [-0.0100, +0.0900]" in text
    assert "combined reward" in text and "+0.6000" in text
    assert "[+0.3000, +0.9000]" in text


def test_table_shows_na_for_undefined_auroc():
    ev = json.loads(json.dumps(EVAL))
    ev["anchor"]["auroc"] = float("nan")
    line = next(x for x in format_table(ev).splitlines() if x.startswith("AUROC"))
    assert line.split()[1] == "n/a" and line.split()[2] == "0.6400"


@pytest.mark.service
def test_runs_lists_the_registry(capsys, monkeypatch):
    with LocalRedis() as url:
        store = RunStore(redis.Redis.from_url(url))
        store.register("run-1", "/tmp/run-1")
        store.add_metrics("run-1", 4, {"policy/total": 0.125, "approx_kl": 1e-5})
        store.set_status("run-1", "finished")
        monkeypatch.setenv("REDIS_URL", url)
        assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) from registry" in out
    line = next(x for x in out.splitlines() if x.startswith("run-1"))
    assert "finished" in line and "0.1250" in line and " 5 " in line  # epoch shown 1-based


def test_runs_without_redis_lists_run_directories(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("preset: cpu-small\n")
    (run / "history.jsonl").write_text(json.dumps({"epoch": 0, "policy/total": 0.5, "approx_kl": 0.0}) + "\n")
    assert main(["runs", "--dir", str(tmp_path / "runs"), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["run_id"] == "r1" and runs[0]["status"] == "incomplete"
    assert runs[0]["latest"]["policy/total"] == 0.5


@pytest.mark.e2e
def test_train_command_with_inprocess_random_models(tmp_path, capsys, monkeypatch):
    """`cxrl train --config FILE` end to end: a saved pipeline directory, in-process random reward
    models, the IU report split; then `cxrl runs` finds the finished run on disk."""
    import torch

    from cxrl.models.generator import build_pipeline, tiny_arch

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's setting
    gen = tmp_path / "gen"
    build_pipeline(tiny_arch(), seed=0).save_pretrained(gen)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"""
preset: cpu-small
rl:
  generator: {gen}
  epochs: 1
  sampling: {{num_steps: 2}}
train_prompts: 4
progress: false
out_dir: {tmp_path / "runs"}
rewards:
  models: {{posture: {{source: random}}, diagnostic: {{source: random}}, consistency: {{source: random}}}}
eval: {{prompts: 4, grid_prompts: 1, bootstrap: 20}}
"""
    )
    assert main(["train", "--config", str(cfg), "--run-name", "cli-run"]) == 0
    out = capsys.readouterr().out
    assert "held-out reports: 4" in out and "combined reward" in out
    run = tmp_path / "runs" / "cli-run"
    assert (run / "report.html").is_file() and (run / "eval.json").is_file()
    assert (run / "checkpoints" / "latest").is_file()
    assert main(["runs", "--dir", str(tmp_path / "runs")]) == 0
    assert "cli-run" in capsys.readouterr().out


def test_redis_urls_are_printed_without_their_password():
    from trainer.cli import redact

    assert redact("redis://cxrl:s3cret@redis:6379/0") == "redis://cxrl:***@redis:6379/0"
    assert redact("redis://:s3cret@127.0.0.1:6380/2") == "redis://:***@127.0.0.1:6380/2"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in redact("rediss://user:s3cret@[::1]:6379/0")
