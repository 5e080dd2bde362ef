"""`cxrl reproduce` on tiny random models: every variant trains one epoch on 2 prompts and is tabulated."""

import json
from pathlib import Path

import pytest
import torch

from cxrl import imaging
from cxrl.eval.bootstrap import Estimate
from cxrl.eval.heldout import Prompt
from cxrl.eval.reproduce import PRESETS, VARIANTS, ReproduceConfig, Reproduction, aggregate
from cxrl.eval.scores import Scored
from cxrl.eval.tables import Row
from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.factory import random_scorers
from cxrl.rl.config import CXRLConfig

REPORTS = ["Cardiomegaly. No pleural effusion.", "Small left pleural effusion."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("repro")
    build_pipeline(tiny_arch()).save_pretrained(root / "pipe")
    prompts = []
    for i, report in enumerate(REPORTS):
        path = root / f"real-{i}.png"
        imaging.save_image(torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(i)), path)
        prompts.append(Prompt(f"t{i}", report, path))
    return root, prompts


def tiny_config(root, **kw):
    return ReproduceConfig(
        train_preset="cpu-small",
        train={
            "generator": str(root / "pipe"),
            "epochs": 1,
            "sampling": {"num_steps": 2, "images_per_epoch": 2, "images_per_prompt": 1, "batch_size": 2},
            "train": {"batch_size": 2, "gradient_accumulation_steps": 1},
            "stat_tracker": {"min_count": 1, "buffer_size": 2},
        },
        data="unused",
        seeds=[0],
        eval={"prompts": 2, "samples_per_report": 2, "bootstrap": 20, "seed": 0},
        **kw,
    )


@pytest.mark.e2e
def test_every_variant_trains_and_is_tabulated(setup):
    root, prompts = setup
    out = root / "out"
    cfg = tiny_config(root)
    text = Reproduction(cfg, out, random_scorers(0)).run(REPORTS, prompts)
    for label in ("| Anchor |", "| CXRL |", "| w/o ACE |", "| w/o RLCF (direct feedback) |"):
        assert label in text
    for line in (
        "| - | Anchor Model |",
        "| 1 | + r_align |",
        "| 2 | + r_diag |",
        "| 3 | + r_consist |",
        "| 4 | r_align + r_diag + r_consist |",
    ):
        assert line in text
    data = json.loads((out / "tables.json").read_text())
    names = [r["name"] for r in data["rows"]]
    assert names[:5] == ["Anchor", "CXRL", "w/o ACE", "w/o RLCF (direct feedback)", "Real test images"]
    assert set(names) == {"Anchor", "Real test images"} | {v.label for v in VARIANTS}
    assert set(data["per_seed"]) == {"anchor", "real"} | {v.slug for v in VARIANTS}
    assert "| Real test images |" in text and text.count("| Real test images |") == 1  # Table 1 only
    for v in VARIANTS:
        run = out / "runs" / f"{v.slug}-seed0"
        assert (run / "checkpoints" / "latest").is_file()  # the RL loop ran and checkpointed
        row = json.loads((run / "eval.json").read_text())["rows"][0]
        assert row["info"]["epochs"] == 1 and row["info"]["train_s"] > 0
        assert (
            set(row["metrics"])
            == set(row["diff"])
            == {"reward_total", "r_align", "auroc", "clip_similarity", "diag_acc", "fid", "msssim"}
        )
    ckpt = json.loads(
        (out / "runs" / "no-ace-seed0" / "checkpoints" / "epoch-000001" / "state.json").read_text()
    )
    assert ckpt["config"]["ace"]["enabled"] is False
    assert not (out / "runs" / "no-ace-seed0" / "checkpoints" / "epoch-000001" / "ace.safetensors").exists()
    assert ckpt["config"]["rewards"]["weights"] == {"align": 1.0, "diag": 10.0, "consist": 10.0}
    diag = json.loads(
        (out / "runs" / "diag-seed0" / "checkpoints" / "epoch-000001" / "state.json").read_text()
    )
    assert diag["config"]["rewards"]["weights"] == {"diag": 10.0}

    # the tables' differences are recomputed from the stored per-image scores, paired by report
    anchor, cxrl = (
        Scored.load(out / "runs" / "anchor" / "scores.npz"),
        Scored.load(out / "runs" / "cxrl-seed0" / "scores.npz"),
    )
    assert anchor.reports == cxrl.reports == REPORTS and list(cxrl.image_prompt) == [0, 0, 1, 1]
    rows = {r["name"]: r for r in data["rows"]}
    for metric in ("r_align", "clip_similarity", "reward_total"):
        per_report = (
            (cxrl.values[metric].astype(float) - anchor.values[metric].astype(float)).reshape(2, 2).mean(1)
        )
        assert rows["CXRL"]["diff"][metric]["value"] == pytest.approx(per_report.mean(), rel=1e-9)
    # the separation section is recomputed from the same differences and the runs' histories
    sep = data["separation"]
    assert set(sep) == {v.slug for v in VARIANTS}
    assert (
        sep["cxrl"]["metrics"]["reward_total"]["difference"] == rows["CXRL"]["diff"]["reward_total"]["value"]
    )
    assert sep["cxrl"]["training"]["runs"] == 1  # one seed, its checkpointed history
    assert "## Separation from the anchor" in text and "| CXRL | reward_total |" in text
    # + r_align trained on one reward is compared on the paper's combined reward
    align = Scored.load(out / "runs" / "align-seed0" / "scores.npz")
    assert set(align.values) == {"reward_total", "r_align", "diag_acc", "clip_similarity"}
    assert rows["Anchor"]["diff"] is None and "fid" not in rows["Real test images"]["diff"]

    # A second run reuses every finished result: same tables, no new training
    mtime = (out / "runs" / "cxrl-seed0" / "eval.json").stat().st_mtime_ns
    again = Reproduction(cfg, out, random_scorers(0)).run(REPORTS, prompts)
    assert again == text
    assert (out / "runs" / "cxrl-seed0" / "eval.json").stat().st_mtime_ns == mtime


@pytest.mark.e2e
def test_parallel_jobs_give_the_serial_results(setup):
    """jobs=2: the runs train in two worker processes and score exactly what the serial runs score."""
    root, prompts = setup
    serial, parallel = root / "serial", root / "parallel"
    chosen = ["cxrl", "no-rlcf"]
    Reproduction(tiny_config(root, variants=chosen), serial, random_scorers(0)).run(REPORTS, prompts)
    cfg = tiny_config(root, variants=chosen, jobs=2)
    repro = Reproduction(cfg, parallel, random_scorers(0))
    assert [(v.slug, s) for v, s in repro.pending(repro.evaluator(prompts))] == [("cxrl", 0), ("no-rlcf", 0)]
    text = repro.run(REPORTS, prompts)
    assert "| CXRL |" in text and "| w/o RLCF (direct feedback) |" in text
    for slug in chosen:
        a = Scored.load(serial / "runs" / f"{slug}-seed0" / "scores.npz")
        b = Scored.load(parallel / "runs" / f"{slug}-seed0" / "scores.npz")
        assert set(a.values) == set(b.values)
        for metric in a.values:
            assert a.values[metric].tolist() == b.values[metric].tolist(), (slug, metric)
        assert (parallel / "runs" / f"{slug}-seed0" / "checkpoints" / "latest").is_file()
    # the anchor run differs from the untrained policy: the runs really trained something
    anchor = Scored.load(parallel / "runs" / "anchor" / "scores.npz")
    cxrl = Scored.load(parallel / "runs" / "cxrl-seed0" / "scores.npz")
    assert cxrl.values["reward_total"].tolist() != anchor.values["reward_total"].tolist()
    # the per-seed metrics the jobs computed (not bootstrapped again in this process) are the serial ones
    assert set(repro._from_jobs) == {str(parallel / "runs" / f"{slug}-seed0") for slug in chosen}
    per_seed = [json.loads((d / "tables.json").read_text())["per_seed"] for d in (serial, parallel)]
    assert per_seed[0] == per_seed[1]
    assert repro.pending(repro.evaluator(prompts)) == []  # everything stored now
    assert list((parallel / "anchors").rglob("*.npz"))  # CXRL's anchors, kept for the seed's other runs


def test_aggregate_over_seeds():
    rows = [
        Row("CXRL", {"fid": Estimate(1.0, 0.5, 1.5), "auroc": Estimate(0.6, 0.5, 0.7)}),
        Row("CXRL", {"fid": Estimate(3.0, 2.0, 4.0)}),
    ]
    agg = aggregate("CXRL", rows)
    assert set(agg.metrics) == {"fid"} and agg.info == {"n_seeds": 2}
    assert agg.metrics["fid"].value == 2.0 and agg.metrics["fid"].n_seeds == 2


def test_config_presets_and_errors(tmp_path):
    cfg = ReproduceConfig.load("cpu-small", ["seeds=[3]", "variants=[cxrl, no-rlcf]"])
    assert cfg.seeds == [3] and [v.slug for v in cfg.chosen()] == ["cxrl", "no-rlcf"]
    assert ReproduceConfig.load("paper").eval.prompts == 1000
    assert {"cpu-small", "paper", "smoke"} <= set(PRESETS)
    for preset in PRESETS:  # every preset's training config of every variant validates
        c = ReproduceConfig.load(preset)
        for v in VARIANTS:
            assert Reproduction(c, tmp_path, ())._rl_config(v, c.seeds[0]).seed == c.seeds[0]
    smoke = ReproduceConfig.load("smoke")
    assert smoke.eval.prompts <= 8 and smoke.train["epochs"] <= 2 and smoke.seeds == [0]
    with pytest.raises(ValueError, match="unknown reproduce preset"):
        ReproduceConfig.load("huge")
    with pytest.raises(ValueError, match="unknown variants"):
        ReproduceConfig.load("cpu-small", {"variants": ["nope"]}).chosen()


def test_the_two_kinds_of_preset_are_told_apart_where_one_is_taken_for_the_other():
    # cpu-small and paper are an RL preset and a reproduce preset each, with different fields
    rl_dir, eval_dir = Path(CXRLConfig.config_dir), Path(ReproduceConfig.config_dir)
    assert {"cpu-small", "paper"} <= set(CXRLConfig.names()) & set(ReproduceConfig.names())
    with pytest.raises(ValueError, match="unknown RL preset 'smoke'.*reproduce presets \\(cxrl/eval/presets"):
        CXRLConfig.load("smoke")  # a reproduce preset's name
    with pytest.raises(
        ValueError, match="unknown reproduce preset 'paper-fast'.*RL presets \\(cxrl/rl/presets"
    ):
        ReproduceConfig.load("paper-fast")  # an RL preset's name
    with pytest.raises(ValueError, match="(?s)Extra inputs.*cpu-small and paper each name one of both kinds"):
        ReproduceConfig.load(rl_dir / "paper.yaml")
    with pytest.raises(ValueError, match="(?s)Extra inputs.*cpu-small and paper each name one of both kinds"):
        CXRLConfig.load(eval_dir / "cpu-small.yaml")
    with pytest.raises(ValueError, match="multiple of") as bad_value:  # not a mix-up: no note
        CXRLConfig.load("paper", {"sampling.batch_size": 10})
    assert "reproduce presets" not in str(bad_value.value)


def test_a_nested_train_override_sets_fields_of_the_preset_not_a_whole_block(tmp_path):
    dotted = ReproduceConfig.load("smoke", ["train.sampling.num_steps=3"])
    assert dotted.train["sampling.num_steps"] == 3 and dotted.train["sampling.batch_size"] == 4
    rl = Reproduction(dotted, tmp_path, ())._rl_config(VARIANTS[0], 0)
    assert rl.sampling.num_steps == 3 and rl.sampling.batch_size == 4
    weights = ReproduceConfig.load("smoke", {"train": {"rewards": {"weights": {"align": 1.0}}}})
    assert weights.train == {"rewards.weights": {"align": 1.0}}  # a mapping-valued field stays whole


@pytest.mark.e2e
def test_reproduce_command(setup, tiny_world):
    import yaml

    from cxrl.cli import main

    root, _ = setup
    preset = root / "tiny.yaml"
    preset.write_text(yaml.safe_dump(tiny_config(root).model_dump(mode="json", exclude={"data", "rewards"})))
    rewards = root / "rewards.yaml"
    rewards.write_text(
        "posture: {source: random}\ndiagnostic: {source: random}\nconsistency: {source: random}\n"
    )
    out = root / "cli-out"
    args = [
        "reproduce",
        "--preset",
        str(preset),
        "--data",
        str(tiny_world),
        "--out",
        str(out),
        "--variants",
        "cxrl",
        "--rewards",
        str(rewards),
    ]
    assert main(args) == 0
    data = json.loads((out / "tables.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["Anchor", "CXRL", "Real test images"]
    assert data["meta"]["data"] == str(tiny_world)
    tables_md = (out / "tables.md").read_text()
    tables, separation = tables_md.split("## Separation from the anchor")
    assert tables.count("| CXRL |") == 2  # Table 1 and Table 2a
    assert separation.count("| CXRL | ") == 4  # one line per metric
    assert (out / "config.yaml").is_file()
    assert main([*args[:-4], "--variants", "nope"]) == 2


@pytest.mark.slow
@pytest.mark.e2e
def test_smoke_preset_with_the_default_models(tmp_path, tiny_world):
    """`cxrl reproduce --preset smoke`: the real path (default generator and reward models) on a world
    the test builds (the default world's data/world is not part of a clone)."""
    from cxrl.cli import main

    assert main(["reproduce", "--preset", "smoke", "--data", str(tiny_world), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "tables.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert set(rows) == {"Anchor", "Real test images"} | {v.label for v in VARIANTS}
    for v in VARIANTS:
        diff, metrics = rows[v.label]["diff"], rows[v.label]["metrics"]
        assert (
            set(diff)
            == set(metrics)
            >= {"reward_total", "r_align", "auroc", "clip_similarity", "fid", "msssim"}
        )
        assert diff["fid"]["low"] <= diff["fid"]["value"] <= diff["fid"]["high"]
    assert data["meta"]["prompts"] == 6 and data["meta"]["samples_per_report"] == 2
