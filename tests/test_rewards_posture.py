import math

import pytest
import torch

from cxrl.models.posture import PostureConfig, PostureNet
from cxrl.rewards.posture import PostureScorer
from cxrl.rewards.types import ModelInfo

INFO = ModelInfo("posture-resnet18", "test", "0" * 64)


def scorer_with_bias(bias: list[float]) -> PostureScorer:
    """A net whose head ignores the image: psi = identity + 0.1 * bias."""
    net = PostureNet(PostureConfig(input_size=32))
    with torch.no_grad():
        net.backbone.fc.bias.copy_(torch.tensor(bias))
    return PostureScorer(net, INFO)


def test_psi_and_r_align_hand_computed_at_any_resolution():
    # psi = (1.2, 0.95, 0.3, -0.4, pi/5): r = -(0.2 + 0.1 + 0.5) = -0.8
    scorer = scorer_with_bias([2.0, -0.5, 3.0, -4.0, 10 * math.pi / 5])
    for size in (20, 64, 100):
        out = scorer(torch.rand(3, 1, size, size))
        assert torch.allclose(out.psi, torch.tensor([[1.2, 0.95, 0.3, -0.4, math.pi / 5]] * 3), atol=1e-5)
        assert torch.allclose(out.r_align, torch.full((3,), -0.8), atol=1e-5)


def test_scorer_runs_in_eval_mode_without_grad():
    scorer = scorer_with_bias([0.0] * 5)
    scorer.model.train()
    scorer = PostureScorer(scorer.model, INFO)
    out = scorer(torch.rand(2, 1, 32, 32))
    assert not scorer.model.training and not out.psi.requires_grad
    assert torch.equal(out.r_align, torch.zeros(2))


def test_bad_images_are_value_errors():
    scorer = scorer_with_bias([0.0] * 5)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        scorer(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scorer(torch.rand(2, 1, 32, 32) * 3)
