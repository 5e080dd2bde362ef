import pytest
import torch

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
