import pytest
import torch

from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import ConsistencyModelConfig, RewardModelsConfig, build_scorers, random_scorers


def fake_labeler(text: str) -> dict[str, int]:
    return {"Effusion": 1, "Edema": 0} if "effusion" in text else {"No Finding": 1}


def test_random_scorers_are_deterministic_per_seed_and_score_any_resolution():
    a = random_scorers(0, labeler=fake_labeler)
    b = random_scorers(0, labeler=fake_labeler)
    c = random_scorers(1, labeler=fake_labeler)
    images = torch.rand(3, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    reports = ["small effusion", "normal chest", "normal chest"]
    assert torch.equal(a[0](images).psi, b[0](images).psi)
    assert not torch.equal(a[0](images).psi, c[0](images).psi)
    assert torch.equal(a[2](images, reports).consistency, b[2](images, reports).consistency)
    d = a[1](images, reports)
    assert d.diag_probs.shape == (3, 18) and d.diag_acc.shape == (3,)
    assert ((d.diag_acc >= 0) & (d.diag_acc <= 1)).all()
    big = torch.nn.functional.interpolate(images, size=96)
    assert a[0](big).psi.shape == (3, 5)


def test_build_scorers_random_and_config_errors():
    cfg = RewardModelsConfig.model_validate(
        {
            "posture": {"source": "random"},
            "diagnostic": {"source": "random"},
            "consistency": {"source": "random"},
        }
    )
    posture, diagnostic, consistency = build_scorers(cfg, labeler=fake_labeler)
    assert posture.info.version == "random-seed0"
    with pytest.raises(ValueError, match="needs `path`"):
        ConsistencyModelConfig(source="checkpoint")
    with pytest.raises(ValueError, match="tokenizer_dir"):
        ConsistencyModelConfig(source="cxr-clip", path="/x/r50_mcc.tar")


def test_default_world_checkpoints_load_and_record_their_quality(tiny_world):
    from cxrl.infra.hashing import sha256_file
    from cxrl.models.reward_assets import DEFAULT_ASSETS, read_checkpoint
    from cxrl.world.dataset import load_records

    posture, diagnostic, consistency = build_scorers(RewardModelsConfig())
    total_bytes = 0
    for scorer, model in ((posture, "posture"), (diagnostic, "diagnostic"), (consistency, "clip")):
        _, manifest = read_checkpoint(DEFAULT_ASSETS / model, model)
        assert scorer.info.weights_hash == sha256_file(DEFAULT_ASSETS / model / "model.safetensors")
        assert scorer.info.version == manifest["version"] and manifest["command"].startswith(
            f"cxrl pretrain {model}"
        )
        total_bytes += sum(p.stat().st_size for p in (DEFAULT_ASSETS / model).iterdir())
    assert total_bytes < 30e6  # the generator has the other 10 MB of the 40 MB budget
    q = {m: read_checkpoint(DEFAULT_ASSETS / m, m)[1]["quality"] for m in ("posture", "diagnostic", "clip")}
    assert q["posture"]["spearman_r_align"] >= 0.8 and q["posture"]["aux_supervised"] == 0  # alignment only
    assert q["diagnostic"]["mean_auroc"] >= 0.9
    assert q["clip"]["matched_vs_mismatched_auroc"] >= 0.85
    # the default scorers run on world images with the project's report labeler
    records = load_records(tiny_world, "test")[:4]
    from cxrl.imaging import load_image

    images = torch.stack([load_image(r.image_path) for r in records])
    reports = [r.report for r in records]
    result = InProcessRewards(posture, diagnostic, consistency).score(images, reports, images.flip(-1))
    assert result.total.shape == (4,) and torch.isfinite(result.total).all()


def test_scorers_from_yaml_reads_the_config_and_sets_the_device(tmp_path):
    from cxrl.rewards.factory import scorers_from_yaml

    path = tmp_path / "rewards.yaml"
    path.write_text(
        "seed: 3\nposture: {source: random}\ndiagnostic: {source: random}\nconsistency: {source: random}\n"
    )
    got = scorers_from_yaml(path, device="cpu")
    want = random_scorers(3)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got[0](x).psi, want[0](x).psi)  # the YAML's seed, not the default's
    assert not torch.equal(got[0](x).psi, random_scorers(0)[0](x).psi)
