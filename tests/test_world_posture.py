import math

import numpy as np
import pytest
import torch

from cxrl.world.posture import IDENTITY, PostureRanges, affine_matrix, align, pose_matrix, valid_region, warp


def test_identity_psi_is_identity_matrix():
    m = affine_matrix(torch.tensor([IDENTITY]))
    assert torch.allclose(m, torch.eye(2, 3)[None])


def test_matrix_matches_the_posture_model_convention():
    from cxrl.models.posture import psi_to_affine

    psi = torch.tensor([[1.1, 0.9, 0.05, -0.07, 0.12], [0.87, 1.13, -0.1, 0.02, -0.17]])
    assert torch.allclose(affine_matrix(psi), psi_to_affine(psi), atol=1e-6)


def test_pose_then_align_is_identity_on_a_pattern():
    # a smooth pattern; posing with psi then aligning with psi gives it back inside the valid region
    s = 96
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    image = (0.5 + 0.25 * torch.sin(3 * xx + 1) * torch.cos(2 * yy))[None, None]  # [1,1,S,S]
    psi = torch.tensor([[1.12, 0.9, 0.08, -0.06, math.radians(8)]])
    posed = warp(image, pose_matrix(psi), padding="border")
    back = align(posed, psi)
    valid = valid_region(psi, s, inset=0.05)[0]
    err = (back[0, 0] - image[0, 0]).abs()[valid]
    assert valid.float().mean() > 0.5
    assert err.max() < 0.02
    # a different psi does not align it
    wrong = align(posed, torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]]))
    assert (wrong[0, 0] - image[0, 0]).abs()[valid].mean() > 0.02


def test_posture_ranges_sample_within_bounds():
    rng = np.random.default_rng(0)
    r = PostureRanges()
    for _ in range(200):
        sx, sy, tx, ty, th = r.sample(rng)
        assert 0.85 <= sx <= 1.15 and 0.85 <= sy <= 1.15
        assert abs(tx) <= 0.1 and abs(ty) <= 0.1
        assert abs(th) <= math.radians(10) + 1e-9


def test_affine_matrix_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        affine_matrix(torch.zeros(3))
