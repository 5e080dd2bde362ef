"""r_align and the RLCF combination against hand-computed values."""

import math

import pytest
import torch

from cxrl.rewards.types import PAPER_WEIGHTS, Components, combine, r_align


def test_r_align_hand_computed():
    psi = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0, 0.0],  # identity: perfect posture
            [1.2, 0.9, 0.3, 0.4, math.pi / 2],  # 0.2 + 0.25 + 0.5
            [0.7, 1.1, -0.6, 0.8, -math.pi],  # 0.3 + 0.5 + 1.0
        ]
    )
    expected = torch.tensor([0.0, -0.95, -1.8])
    assert torch.allclose(r_align(psi), expected, atol=1e-6)


def test_r_align_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        r_align(torch.zeros(3, 4))


def test_combine_rlcf_and_direct():
    policy = Components(
        r_align=torch.tensor([-0.2, -0.5]),
        diag_acc=torch.tensor([0.8, 0.5]),
        consistency=torch.tensor([0.30, 0.10]),
    )
    anchor = Components(
        r_align=torch.tensor([-0.4, -0.1]),
        diag_acc=torch.tensor([0.6, 0.75]),
        consistency=torch.tensor([0.25, 0.20]),
    )
    rlcf = combine(policy, anchor, PAPER_WEIGHTS)
    # 1*(-0.2) + 10*(0.8-0.6) + 10*(0.30-0.25) = -0.2 + 2.0 + 0.5
    # 1*(-0.5) + 10*(0.5-0.75) + 10*(0.10-0.20) = -0.5 - 2.5 - 1.0
    assert torch.allclose(rlcf, torch.tensor([2.3, -4.0]), atol=1e-6)
    direct = combine(policy, anchor, PAPER_WEIGHTS, rlcf=False)
    assert torch.allclose(direct, torch.tensor([-0.2 + 8.0 + 3.0, -0.5 + 5.0 + 1.0]), atol=1e-6)
    only_diag = combine(policy, anchor, {"diag": 10.0})
    assert torch.allclose(only_diag, torch.tensor([2.0, -2.5]), atol=1e-6)


def test_combine_errors():
    policy = Components(r_align=torch.zeros(2), diag_acc=torch.zeros(2))
    with pytest.raises(ValueError, match="anchor"):
        combine(policy, None, {"diag": 1.0})
    with pytest.raises(ValueError, match="consistency was not computed"):
        combine(policy, policy, {"consist": 1.0})
    with pytest.raises(ValueError, match="unknown reward"):
        combine(policy, policy, {"aesthetic": 1.0})
    with pytest.raises(ValueError, match="no rewards"):
        combine(policy, policy, {})
    assert torch.equal(combine(policy, None, {"align": 1.0}), torch.zeros(2))
