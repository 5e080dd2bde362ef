"""Evaluation orchestration on tiny inputs: known answers for FID, MS-SSIM and AUROC wiring."""

import numpy as np
import pytest
import torch
import torchxrayvision as xrv

from cxrl import imaging
from cxrl.eval import auroc
from cxrl.eval.evaluate import EvalConfig, Evaluator
from cxrl.eval.fid import XrvFeatureExtractor
from cxrl.eval.generators import ImageDirSource, Prompt, RealSource
from cxrl.eval.imagedir import Group, ImageDirWriter
from cxrl.rewards.factory import random_scorers
from cxrl.rewards.types import Components

REPORTS = [
    "Cardiomegaly. No pleural effusion.",
    "No acute cardiopulmonary process.",
    "Small left pleural effusion.",
    "Mild pulmonary edema, possible pneumonia.",
    "Stable cardiomegaly with small bilateral effusions.",
    "No acute cardiopulmonary process.",
]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    g = torch.Generator().manual_seed(0)
    out = []
    for i, report in enumerate(REPORTS):
        path = d / f"real-{i}.png"
        img = 0.3 + 0.4 * torch.rand(1, 48, 48, generator=g)  # [1,H,W]
        imaging.save_image(img, path)
        out.append(Prompt(f"r{i}", report, path))
    return out


@pytest.fixture(scope="module")
def scorers():
    torch.set_num_threads(1)
    return random_scorers(0)


@pytest.fixture(scope="module")
def features():
    # A freshly initialised xrv DenseNet: its features2 vary with the input
    torch.manual_seed(0)
    net = xrv.models.DenseNet(
        growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=18, weights=None
    )
    return XrvFeatureExtractor(net.eval(), input_size=32)


def config(**kw):
    return EvalConfig(**{"prompts": 6, "samples_per_prompt": 2, "bootstrap": 100, **kw})


def write_dir(path, prompts, make):
    writer = ImageDirWriter(path)
    for p in prompts:
        writer.add(Group(p.id, p.report, make(p)))
    writer.close()
    return path


def test_copies_of_real_images_give_known_fid_and_unit_msssim(tmp_path, prompts, scorers, features):
    # K=2 identical copies of each real image: features are the reference's, each twice
    d = write_dir(
        tmp_path / "copies", prompts, lambda p: imaging.load_image(p.image_path)[None].repeat(2, 1, 1, 1)
    )
    ev = Evaluator(config(), scorers, prompts, features)
    row = ev.evaluate(ImageDirSource("copies", d))
    assert np.trace(ev.reference((48, 48)).stats.sigma) > 1e-4  # the features do vary
    # Duplicating every row keeps the mean and scales the covariance by c = 2(N-1)/(2N-1), so
    # FID = Tr(S + cS - 2 sqrt(c) S) = (1 - sqrt(c))^2 Tr(S) exactly.
    c = 2 * (6 - 1) / (2 * 6 - 1)
    expected = (1 - np.sqrt(c)) ** 2 * np.trace(ev.reference((48, 48)).stats.sigma)
    assert row.metrics["fid"].value == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert row.metrics["msssim"].value == pytest.approx(1.0, abs=1e-6)
    assert row.info == {**row.info, "prompts": 6, "images": 12}
    noise = write_dir(tmp_path / "noise", prompts, lambda p: torch.rand(2, 1, 48, 48))
    noisy = ev.evaluate(ImageDirSource("noise", noise))
    assert noisy.metrics["fid"].value > 10 * row.metrics["fid"].value
    assert noisy.metrics["msssim"].value < 0.2
    assert noisy.metrics["fid"].low <= noisy.metrics["fid"].value <= noisy.metrics["fid"].high


def test_fid_reference_matches_the_generated_resolution(tmp_path, prompts, scorers, features):
    # Generated images at half the real resolution are compared with real images resized to it
    def small(p):
        return imaging.resize(imaging.load_image(p.image_path)[None], 24).repeat(2, 1, 1, 1)

    ev = Evaluator(config(), scorers, prompts, features)
    row = ev.evaluate(ImageDirSource("small", write_dir(tmp_path / "small", prompts, small)))
    gen = ev.score(ImageDirSource("small", tmp_path / "small"))
    assert gen.image_size == (24, 24)
    assert row.metrics["fid"].value == pytest.approx(ev.reference((24, 24)).distance(gen.features))
    unmatched = ev.reference(None).distance(gen.features)  # real images at their own 48 px
    assert row.metrics["fid"].value < 0.1 * unmatched


def test_real_row_matches_direct_scoring(prompts, scorers):
    ev = Evaluator(config(samples_per_prompt=1), scorers, prompts)
    row = ev.evaluate(RealSource(), with_fid=False)
    assert "fid" not in row.metrics and "msssim" not in row.metrics  # one image per prompt
    images = torch.stack([imaging.load_image(p.image_path) for p in prompts])  # [6,1,48,48]
    reports = [p.report for p in prompts]
    posture, _, consistency = scorers
    assert row.metrics["r_align"].value == pytest.approx(float(posture(images).r_align.mean()), rel=1e-5)
    assert row.metrics["clip"].value == pytest.approx(
        float(consistency(images, reports).consistency.mean()), rel=1e-5
    )


class OracleDiagnostic:
    """Wraps a diagnostic scorer but answers with the prompt's own labels (probabilities 0/1)."""

    def __init__(self, inner, flip=False):
        self.model, self.input_size, self.flip = inner.model, inner.input_size, flip

    def __call__(self, images, reports):
        t = auroc.report_targets(reports)
        probs = torch.from_numpy(np.nan_to_num(1 - t if self.flip else t, nan=0.5)).float()
        return Components(diag_probs=probs)


@pytest.mark.parametrize("flip,expected", [(False, 1.0), (True, 0.0)])
def test_auroc_reads_labels_from_each_images_prompt(tmp_path, prompts, scorers, flip, expected):
    d = write_dir(tmp_path / "imgs", prompts, lambda p: torch.rand(2, 1, 48, 48))
    oracle = (scorers[0], OracleDiagnostic(scorers[1], flip), scorers[2])
    row = Evaluator(config(), oracle, prompts).evaluate(ImageDirSource("x", d), with_fid=False)
    assert row.metrics["auroc"].value == pytest.approx(expected)
    assert row.info["auroc_labels"] == 3  # Cardiomegaly, Effusion, Edema have both classes


def test_seeded_bootstrap_is_reproducible(tmp_path, prompts, scorers, features):
    d = write_dir(tmp_path / "imgs", prompts, lambda p: torch.rand(2, 1, 48, 48))
    a = Evaluator(config(), scorers, prompts, features).evaluate(ImageDirSource("x", d))
    b = Evaluator(config(), scorers, prompts, features).evaluate(ImageDirSource("x", d))
    c = Evaluator(config(seed=1), scorers, prompts, features).evaluate(ImageDirSource("x", d))
    assert a.metrics == b.metrics
    assert a.metrics["r_align"].value == c.metrics["r_align"].value
    assert a.metrics["r_align"].low != c.metrics["r_align"].low


def test_too_few_prompts_raise(tmp_path, prompts, scorers):
    d = write_dir(tmp_path / "one", prompts[:1], lambda p: torch.rand(2, 1, 48, 48))
    with pytest.raises(ValueError, match="need at least 2"):
        Evaluator(config(), scorers, prompts).evaluate(ImageDirSource("one", d))


# -- model generators and the command line ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny pipeline directory, a CXRL checkpoint on it (perturbed LoRA + ACE), random rewards YAML."""
    from cxrl.models.generator import build_pipeline, load_pipeline, tiny_arch
    from cxrl.rl.checkpoint import save_checkpoint
    from cxrl.rl.config import CXRLConfig
    from cxrl.rl.policy import Policy

    root = tmp_path_factory.mktemp("models")
    build_pipeline(tiny_arch()).save_pretrained(root / "pipe")
    cfg = CXRLConfig(generator=str(root / "pipe"), seed=3)
    policy = Policy(load_pipeline(root / "pipe"), lora_rank=cfg.lora.rank, ace_tokens=cfg.ace.tokens, seed=3)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.3 * torch.randn_like(p))
    opt = torch.optim.AdamW(policy.trainable_parameters())
    save_checkpoint(
        root / "run" / "checkpoints",
        1,
        policy,
        opt,
        torch.Generator(),
        {},
        {"config": cfg.model_dump(mode="json")},
    )
    rewards = root / "rewards.yaml"
    rewards.write_text(
        "posture: {source: random}\ndiagnostic: {source: random}\nconsistency: {source: random}\n"
    )
    return root, policy


def test_checkpoint_spec_restores_the_trained_policy(tiny_models):
    from cxrl.eval.generators import PolicySource, Sampling, parse_spec

    root, trained = tiny_models
    source = parse_spec("CXRL=ckpt:" + str(root / "run"), Sampling(num_steps=2, batch_size=4))
    assert isinstance(source, PolicySource) and source.name == "CXRL"
    torch.testing.assert_close(source.policy.ace.tokens, trained.ace.tokens)
    ours, theirs = source.policy.lora_state_dict(), trained.lora_state_dict()
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])
    anchor = parse_spec("anchor:" + str(root / "pipe"), Sampling(num_steps=2, batch_size=4))
    prompts = [Prompt("a", REPORTS[0]), Prompt("b", REPORTS[2])]
    a1, a2 = list(anchor.groups(prompts, 2)), list(anchor.groups(prompts, 2))
    c = list(source.groups(prompts, 2))
    assert [g.images.shape for g in a1] == [(2, 1, 32, 32)] * 2
    torch.testing.assert_close(a1[1].images, a2[1].images)  # seeded noise: reproducible
    assert not torch.allclose(a1[0].images[0], a1[0].images[1])  # samples of one prompt differ
    assert not torch.allclose(a1[0].images, c[0].images)  # the trained adapters change the images


def test_spec_errors(tmp_path):
    from cxrl.eval.generators import Sampling, parse_spec

    for spec, match in [("gan:x", "unknown generator spec"), ("ckpt:", "needs a path"), ("=real", "empty label"),
                        ("ckpt:" + str(tmp_path), "not a CXRL checkpoint"), ("images:" + str(tmp_path), "reports.csv")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            parse_spec(spec, Sampling())


@pytest.mark.e2e
def test_evaluate_command(tmp_path, tiny_models, tiny_world):
    import json

    from cxrl.cli import main

    root, _ = tiny_models
    common = ["--data", str(tiny_world), "--rewards", str(root / "rewards.yaml"), "--prompts", "4",
              "--samples", "2", "--steps", "2", "--bootstrap", "20", "--batch-size", "4"]  # fmt: skip
    md, js, saved = tmp_path / "t.md", tmp_path / "t.json", tmp_path / "imgs"
    gens = [
        "--generator",
        f"anchor:{root / 'pipe'}",
        "--generator",
        f"CXRL=ckpt:{root / 'run'}",
        "--generator",
        "real",
    ]
    assert (
        main(
            [
                "evaluate",
                *gens,
                *common,
                "--json",
                str(js),
                "--markdown",
                str(md),
                "--save-images",
                str(saved),
            ]
        )
        == 0
    )
    data = json.loads(js.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == [f"anchor:{root / 'pipe'}", "CXRL", "real"]
    assert set(rows["CXRL"]["metrics"]) == {"r_align", "auroc", "clip", "fid", "msssim"}
    assert set(rows["real"]["metrics"]) == {"r_align", "auroc", "clip"}  # no FID against itself, K=1
    assert rows["CXRL"]["info"]["images"] == 8 and data["meta"]["prompts"] == 4
    assert "## Table 2a. Image quality" in md.read_text()
    # The saved images evaluate as images:DIR to (nearly) the same numbers: PNG is 8-bit
    assert main(["evaluate", "--generator", f"CXRL=images:{saved / 'CXRL'}", *common, "--json", str(js)]) == 0
    again = json.loads(js.read_text())["rows"][0]
    assert again["info"]["images"] == 8
    for metric in ("r_align", "clip", "msssim"):
        assert again["metrics"][metric]["value"] == pytest.approx(
            rows["CXRL"]["metrics"][metric]["value"], abs=0.02
        )
    # bad input is a clean error
    assert main(["evaluate", "--generator", "gan:x", *common]) == 2


def test_select_prompts_from_a_world(tiny_world):
    from cxrl.eval.evaluate import select_prompts
    from cxrl.world.dataset import load_records

    test_ids = {r.id for r in load_records(tiny_world, split="test")}
    a, b, c = (select_prompts(tiny_world, 5, seed) for seed in (0, 0, 1))
    assert len(a) == 5 and len({p.id for p in a}) == 5
    assert {p.id for p in a} <= test_ids  # held-out reports only
    assert a == b and [p.id for p in a] != [p.id for p in c]
    assert all(p.image_path.is_file() and p.report.strip() for p in a)
    assert len(select_prompts(tiny_world, 10_000, 0)) == len(test_ids)  # capped at what exists
