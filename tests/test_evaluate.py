"""The one held-out evaluation: known answers for FID, MS-SSIM, AUROC and the paired differences."""

import numpy as np
import pytest
import torch
import torchxrayvision as xrv
from _grpc_gateway import grpc_gateway

from cxrl import imaging
from cxrl.client import RewardClient
from cxrl.eval import auroc
from cxrl.eval.evaluate import Evaluator, feature_model
from cxrl.eval.fid import XrvFeatureExtractor
from cxrl.eval.heldout import HeldOutConfig, Prompt, held_out_seed
from cxrl.eval.scores import Scored, metrics, paired_difference
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import RewardModelsConfig, random_scorers
from cxrl.rewards.types import PAPER_WEIGHTS, Components
from cxrl.rl.config import SamplingSettings

REPORTS = [
    "Cardiomegaly. No pleural effusion.",
    "No acute cardiopulmonary process.",
    "Small left pleural effusion.",
    "Mild pulmonary edema, possible pneumonia.",
    "Stable cardiomegaly with small bilateral effusions.",
    "No acute cardiopulmonary process.",
]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


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
    return random_scorers(0)


@pytest.fixture(scope="module")
def features():
    # A freshly initialised xrv DenseNet: its features2 vary with the input
    torch.manual_seed(0)
    net = xrv.models.DenseNet(
        growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=18, weights=None
    )
    return XrvFeatureExtractor(net.eval(), input_size=32)


def config(**kw) -> HeldOutConfig:
    return HeldOutConfig(**{"prompts": 6, "samples_per_report": 2, "bootstrap": 100, "seed": 0, **kw})


def evaluator(chosen, scorers, features=None, policy=None, **kw) -> Evaluator:
    backend = InProcessRewards(*scorers, weights=PAPER_WEIGHTS, rlcf=False)
    sampling = SamplingSettings(num_steps=2, batch_size=4)
    return Evaluator(config(**kw), chosen, sampling, backend, PAPER_WEIGHTS, policy, features)


def groups(prompts, make):
    return [(p.report, make(p)) for p in prompts]


def test_copies_of_real_images_give_known_fid_and_unit_msssim(prompts, scorers, features):
    # K=2 identical copies of each real image: features are the reference's, each twice
    ev = evaluator(prompts, scorers, features)
    copies = ev.scored_groups(
        "copies", groups(prompts, lambda p: imaging.load_image(p.image_path)[None].repeat(2, 1, 1, 1))
    )
    m = ev.metrics(copies)
    sigma = ev.reference((48, 48)).stats.sigma
    assert np.trace(sigma) > 1e-4  # the features do vary
    # Duplicating every row keeps the mean and scales the covariance by c = 2(N-1)/(2N-1), so
    # FID = Tr(S + cS - 2 sqrt(c) S) = (1 - sqrt(c))^2 Tr(S) exactly.
    c = 2 * (6 - 1) / (2 * 6 - 1)
    assert m["fid"].value == pytest.approx((1 - np.sqrt(c)) ** 2 * np.trace(sigma), rel=1e-4, abs=1e-9)
    assert m["msssim"].value == pytest.approx(1.0, abs=1e-6)
    assert copies.n_prompts == 6 and list(copies.image_prompt) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    noisy = ev.scored_groups("noise", groups(prompts, lambda p: torch.rand(2, 1, 48, 48)))
    n = ev.metrics(noisy)
    assert n["fid"].value > 10 * m["fid"].value and n["msssim"].value < 0.2
    assert n["fid"].low <= n["fid"].value <= n["fid"].high
    # the paired difference of FID is the difference of the two FIDs on all reports
    d = ev.paired([noisy], copies)
    assert d["fid"].value == pytest.approx(n["fid"].value - m["fid"].value)
    assert d["msssim"].value == pytest.approx(n["msssim"].value - 1.0)


def test_fid_reference_matches_the_generated_resolution(prompts, scorers, features):
    def small(p):
        return imaging.resize(imaging.load_image(p.image_path)[None], 24).repeat(2, 1, 1, 1)

    ev = evaluator(prompts, scorers, features)
    gen = ev.scored_groups("small", groups(prompts, small))
    assert gen.size == (24, 24)
    fid = ev.metrics(gen)["fid"].value
    assert fid == pytest.approx(ev.reference((24, 24)).distance(gen.features))
    assert fid < 0.1 * ev.reference(None).distance(gen.features)  # real images at their own 48 px


def test_without_real_images_or_feature_model_there_is_no_fid(prompts, scorers, features):
    no_images = [Prompt(p.id, p.report) for p in prompts]
    for ev in (evaluator(prompts, scorers, None), evaluator(no_images, scorers, features)):
        s = ev.scored_groups("x", groups(prompts, lambda p: torch.rand(2, 1, 48, 48)))
        assert "fid" not in ev.metrics(s) and "msssim" in ev.metrics(s)


RANDOM_MODELS = RewardModelsConfig(
    posture={"source": "random"}, diagnostic={"source": "random"}, consistency={"source": "random"}, seed=0
)


def test_over_grpc_fid_comes_from_the_diagnostic_model_loaded_here(prompts, scorers, caplog):
    # the in-process path: the backend's own diagnostic model (random_scorers(0), as the gateway serves)
    local = evaluator(prompts, scorers, feature_model(InProcessRewards(*scorers)))
    g = torch.Generator().manual_seed(1)
    images = groups(prompts, lambda p: torch.rand(2, 1, 48, 48, generator=g))
    want = local.metrics(local.scored_groups("x", images))
    with grpc_gateway(seed=0) as url, RewardClient(url, weights=PAPER_WEIGHTS, retries=0) as client:
        assert feature_model(client) is None  # no reward model settings: nothing to load
        assert feature_model(client, "off", RANDOM_MODELS) is None
        features = feature_model(client, "auto", RANDOM_MODELS)
        assert "does not serve" not in caplog.text
        remote = Evaluator(
            config(), prompts, SamplingSettings(batch_size=4), client, PAPER_WEIGHTS, None, features
        )
        got = remote.metrics(remote.scored_groups("x", images))
        off = Evaluator(
            config(fid_features="off"), prompts, SamplingSettings(), client, PAPER_WEIGHTS, None, features
        )
        assert "fid" not in off.metrics(off.scored_groups("x", images))  # 'off' wins over a given model
        feature_model(client, "auto", RewardModelsConfig())  # the default world's model: not the served one
        assert "does not serve" in caplog.text
    # the same real-image reference and the same FID, to float rounding
    np.testing.assert_allclose(
        remote.reference((48, 48)).stats.mu, local.reference((48, 48)).stats.mu, rtol=1e-6
    )
    assert np.isfinite(got["fid"].value) and got["fid"].value > 0
    for field in ("value", "low", "high"):
        assert getattr(got["fid"], field) == pytest.approx(getattr(want["fid"], field), rel=1e-6, abs=1e-9)
    assert got["msssim"].value == pytest.approx(want["msssim"].value, rel=1e-9)


def test_real_images_score_as_the_reward_models_say(prompts, scorers):
    ev = evaluator(prompts, scorers, samples_per_report=1)
    real = ev.scored_groups("real", groups(prompts, lambda p: imaging.load_image(p.image_path)[None]))
    m = ev.metrics(real, with_fid=False)
    assert "fid" not in m and "msssim" not in m  # one image per report
    images = torch.stack([imaging.load_image(p.image_path) for p in prompts])  # [6,1,48,48]
    posture, diagnostic, consistency = scorers
    r_align = posture(images).r_align.double()
    cos = consistency(images, REPORTS).consistency.double()
    acc = diagnostic(images, REPORTS).diag_acc.double()
    assert m["r_align"].value == pytest.approx(float(r_align.mean()), rel=1e-6)
    assert m["clip_similarity"].value == pytest.approx(float(cos.mean()), rel=1e-6)
    assert m["reward_total"].value == pytest.approx(float((r_align + 10 * acc + 10 * cos).mean()), rel=1e-6)


class OracleDiagnostic:
    """Wraps a diagnostic scorer but answers with the prompt's own labels (probabilities 0/1)."""

    def __init__(self, inner, flip=False):
        self.model, self.input_size, self.info, self.flip = inner.model, inner.input_size, inner.info, flip

    def __call__(self, images, reports):
        t = auroc.report_targets(reports)
        probs = torch.from_numpy(np.nan_to_num(1 - t if self.flip else t, nan=0.5)).float()
        return Components(diag_acc=torch.ones(len(reports)), diag_probs=probs)


def test_auroc_reads_labels_from_each_images_report(prompts, scorers):
    right = evaluator(prompts, (scorers[0], OracleDiagnostic(scorers[1]), scorers[2]))
    wrong = evaluator(prompts, (scorers[0], OracleDiagnostic(scorers[1], flip=True), scorers[2]))
    a = right.scored_groups("right", groups(prompts, lambda p: torch.rand(2, 1, 48, 48)))
    b = wrong.scored_groups("wrong", groups(prompts, lambda p: torch.rand(2, 1, 48, 48)))
    assert right.metrics(a)["auroc"].value == pytest.approx(1.0)
    assert right.metrics(b)["auroc"].value == pytest.approx(0.0)
    assert right.paired([b], a)["auroc"].value == pytest.approx(-1.0)


# -- paired differences on a case small enough to do by hand ------------------------------------


def hand_scored(name, r_align, probs=None):
    """3 reports x 2 images; image i*2 + j is report i's j-th image."""
    return Scored(
        name,
        REPORTS[:3],
        np.repeat(np.arange(3), 2),
        {"r_align": np.array(r_align, dtype=np.float32)},
        None if probs is None else np.array(probs, dtype=np.float32),
        None,
        np.full(3, np.nan),
        (8, 8),
    )


def test_paired_difference_by_hand():
    anchor = hand_scored("a", [0.0, 0.2, 1.0, 1.0, -0.5, 0.5])  # per report: 0.1, 1.0, 0.0
    policy = hand_scored("p", [0.4, 0.2, 1.0, 2.0, 0.0, 0.0])  # per report: 0.3, 1.5, 0.0
    cfg = HeldOutConfig(prompts=3, bootstrap=0)
    d = paired_difference([policy], anchor, cfg)["r_align"]
    assert d.value == pytest.approx((0.2 + 0.5 + 0.0) / 3)
    assert metrics(policy, cfg)["r_align"].value - metrics(anchor, cfg)["r_align"].value == pytest.approx(
        d.value
    )
    # the interval: resample reports (each with both its images) with the seeded generator
    cfg = HeldOutConfig(prompts=3, bootstrap=200, seed=5)
    per_report = np.array([0.2, 0.5, 0.0])
    rng = np.random.default_rng(5)
    draws = [per_report[rng.integers(0, 3, size=3)].mean() for _ in range(200)]
    d = paired_difference([policy], anchor, cfg)["r_align"]
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])), abs=1e-6)
    # two training seeds: the mean of their differences, and their spread
    policy2 = hand_scored("p2", [0.0, 0.2, 1.0, 1.0, -0.5, 0.5 + 0.6])  # +0.1 over the anchor
    two = paired_difference([policy, policy2], anchor, HeldOutConfig(prompts=3, bootstrap=0))["r_align"]
    assert two.value == pytest.approx((0.7 / 3 + 0.1) / 2)
    assert two.sd == pytest.approx(np.std([0.7 / 3, 0.1], ddof=1)) and two.n_seeds == 2


def test_paired_auroc_resamples_reports_with_all_their_images():
    # labels: report 0 Cardiomegaly+ Effusion-, report 1 negative everywhere, report 2 Effusion+
    col = {name: j for j, name in enumerate(auroc.XRV_PATHOLOGIES)}
    probs = np.full((6, 18), 0.5)  # Effusion: 0.5 everywhere, AUROC 0.5
    probs[:, col["Cardiomegaly"]] = [0.9, 0.2, 0.1, 0.3, 0.6, 0.2]  # AUROC (4 + 1 + 0.5) / 8
    anchor = hand_scored("a", np.zeros(6), probs)
    better = probs.copy()
    better[:, col["Cardiomegaly"]] = [0.9, 0.8, 0.1, 0.3, 0.2, 0.2]
    policy = hand_scored("p", np.zeros(6), better)
    cfg = HeldOutConfig(prompts=3, bootstrap=50, seed=1)
    targets = auroc.report_targets(REPORTS[:3])[np.repeat(np.arange(3), 2)]
    rows = lambda idx: np.concatenate([[2 * i, 2 * i + 1] for i in idx])  # noqa: E731
    rng = np.random.default_rng(1)
    draws = []
    for _ in range(50):
        idx = rng.integers(0, 3, size=3)
        d = (
            auroc.mean_auroc(better[rows(idx)], targets[rows(idx)]).mean
            - auroc.mean_auroc(probs[rows(idx)], targets[rows(idx)]).mean
        )
        draws.append(d)
    draws = np.array(draws)
    draws = draws[np.isfinite(draws)]
    est = paired_difference([policy], anchor, cfg)["auroc"]
    full = auroc.mean_auroc(better, targets).mean - auroc.mean_auroc(probs, targets).mean
    assert full == est.value == pytest.approx((1.0 + 0.5) / 2 - (5.5 / 8 + 0.5) / 2)
    assert est.n_resamples == len(draws)
    assert (est.low, est.high) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))


def test_pairs_need_the_same_reports():
    a = hand_scored("a", np.zeros(6))
    b = Scored("b", REPORTS[1:4], a.image_prompt, a.values, None, None, a.msssim, a.size)
    with pytest.raises(ValueError, match="other reports"):
        paired_difference([b], a, HeldOutConfig())


# -- sampling: one seed scheme, the anchor once --------------------------------------------------


def test_anchor_and_policy_share_the_held_out_pairs_and_the_anchor_is_sampled_once(prompts, scorers):
    from cxrl.models.generator import build_pipeline, tiny_arch
    from cxrl.rl.policy import Policy

    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(0.3 * torch.randn_like(p))
    few = prompts[:3]
    ev = evaluator(few, scorers, policy=policy, prompts=3, samples_per_report=2)
    assert ev.seeds == [held_out_seed(0, p.report, j) for p in few for j in range(2)]
    assert held_out_seed(0, "a") == held_out_seed(0, "a", 0) != held_out_seed(0, "a", 1)
    calls = []
    score = ev.backend.score
    ev.backend.score = lambda images, reports: calls.append(len(reports)) or score(images, reports)
    anchor = ev.anchor()
    assert ev.anchor() is anchor and calls == [4, 2]  # computed once, a sampling batch per reward call
    out = ev.evaluate()
    assert calls == [4, 2, 4, 2]
    policy_side = ev.sampled("again")
    assert np.array_equal(policy_side.values["r_align"], ev.sampled("again").values["r_align"])  # fixed seeds
    assert not np.allclose(policy_side.values["r_align"], anchor.values["r_align"])  # the adapters act
    # eval.json figures: per-report means; the combined reward's difference is the difference of means
    cfg = ev.cfg
    assert out["anchor"]["r_align"] == pytest.approx(float(anchor.values["r_align"].astype(float).mean()))
    assert out["diff"]["reward_total"]["value"] == pytest.approx(
        out["cxrl"]["reward_total"] - out["anchor"]["reward_total"]
    )
    assert out["diff"] == {k: e.to_dict() for k, e in paired_difference([policy_side], anchor, cfg).items()}
    assert set(out["diff"]) == {"reward_total", "r_align", "auroc", "clip_similarity", "diag_acc", "msssim"}
    # K=1 images are the first image of each report under K=2
    one = evaluator(few, scorers, policy=policy, prompts=3, samples_per_report=1)
    assert np.array_equal(one.anchor().values["r_align"], anchor.values["r_align"][::2])


# -- generator specs and the command line --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny pipeline directory, a CXRL checkpoint on it (perturbed LoRA + ACE), random rewards YAML."""
    from cxrl.models.generator import build_pipeline, load_pipeline, tiny_arch
    from cxrl.rl.checkpoint import save_checkpoint
    from cxrl.rl.config import CXRLConfig
    from cxrl.rl.policy import Policy

    root = tmp_path_factory.mktemp("models")
    build_pipeline(tiny_arch()).save_pretrained(root / "pipe")
    cfg = CXRLConfig(
        generator=str(root / "pipe"),
        seed=3,
        sampling={"num_steps": 2, "batch_size": 4, "images_per_epoch": 8},
        train={"batch_size": 4, "gradient_accumulation_steps": 2},
    )
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
    from cxrl.eval.generators import load_policy_checkpoint, parse_spec

    root, trained = tiny_models
    spec = parse_spec("CXRL=ckpt:" + str(root / "run"))
    assert (spec.name, spec.kind) == ("CXRL", "ckpt")
    policy = load_policy_checkpoint(spec.arg)
    torch.testing.assert_close(policy.ace.tokens, trained.ace.tokens)
    ours, theirs = policy.lora_state_dict(), trained.lora_state_dict()
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])


def test_spec_errors(tmp_path):
    from cxrl.eval.generators import parse_spec

    for spec, match in [
        ("gan:x", "unknown generator spec"),
        ("ckpt:", "needs a path"),
        ("=real", "empty label"),
        ("ckpt:" + str(tmp_path), "not a CXRL checkpoint"),
        ("images:" + str(tmp_path), "reports.csv"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_spec(spec)


@pytest.mark.e2e
def test_evaluate_command(tmp_path, tiny_models, tiny_world):
    import json

    from cxrl.cli import main

    root, _ = tiny_models
    common = [
        "--data",
        str(tiny_world),
        "--rewards",
        str(root / "rewards.yaml"),
        "--prompts",
        "4",
        "--samples",
        "2",
        "--bootstrap",
        "20",
        "--seed",
        "0",
    ]
    md, js, saved = tmp_path / "t.md", tmp_path / "t.json", tmp_path / "imgs"
    gens = [f"CXRL=ckpt:{root / 'run'}", "real"]
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
    assert list(rows) == ["anchor", "CXRL", "real"]
    assert data["meta"]["sampling"]["num_steps"] == 2  # the checkpoint's sampler
    assert set(rows["CXRL"]["metrics"]) == {
        "reward_total",
        "r_align",
        "auroc",
        "clip_similarity",
        "diag_acc",
        "fid",
        "msssim",
    }
    assert set(rows["CXRL"]["diff"]) == set(rows["CXRL"]["metrics"]) and rows["anchor"]["diff"] is None
    assert "fid" not in rows["real"]["metrics"] and "fid" not in rows["real"]["diff"]
    for m in ("r_align", "fid", "clip_similarity"):
        diff = rows["CXRL"]["metrics"][m]["value"] - rows["anchor"]["metrics"][m]["value"]
        assert rows["CXRL"]["diff"][m]["value"] == pytest.approx(diff)
    assert rows["CXRL"]["info"]["images"] == 8 and data["meta"]["prompts"] == 4
    assert "## Table 2a. Image quality" in md.read_text()
    # The saved images evaluate as images:DIR to (nearly) the same numbers: PNG is 8-bit
    anchor = [
        "--base",
        str(root / "pipe"),
        "--steps",
        "2",
        "--batch-size",
        "4",
    ]  # no run: say what the anchor is
    assert main(["evaluate", f"CXRL=images:{saved / 'CXRL'}", *common, *anchor, "--json", str(js)]) == 0
    again = {r["name"]: r for r in json.loads(js.read_text())["rows"]}["CXRL"]
    assert again["info"]["images"] == 8
    assert again["diff"]["r_align"]["value"] == pytest.approx(
        rows["CXRL"]["diff"]["r_align"]["value"], abs=0.02
    )
    for metric in ("r_align", "clip_similarity", "msssim"):
        assert again["metrics"][metric]["value"] == pytest.approx(
            rows["CXRL"]["metrics"][metric]["value"], abs=0.02
        )
    assert main(["evaluate", "gan:x", *common]) == 2  # bad input is a clean error


def test_held_out_from_a_world(tiny_world):
    from cxrl.eval.heldout import held_out, split_reports
    from cxrl.world.dataset import load_records

    test_records = load_records(tiny_world, split="test")
    _, test = split_reports(tiny_world)
    a, b, c = (held_out(test, HeldOutConfig(prompts=5, seed=s), tiny_world) for s in (0, 0, 1))
    assert len(a) == 5 and len({p.report for p in a}) == 5
    assert {p.report for p in a} <= {r.report for r in test_records}  # held-out reports only
    assert a == b and [p.id for p in a] != [p.id for p in c]
    assert all(p.image_path.is_file() for p in a)
    assert len(held_out(test, HeldOutConfig(prompts=10_000), tiny_world)) == len(
        test
    )  # capped at what exists
