import math

import torch

from cxrl.models.posture import IDENTITY_PSI, PostureConfig, PostureNet, alignment_loss, psi_to_affine, warp
from cxrl.world.posture import affine_matrix, pose_matrix
from cxrl.world.posture import warp as world_warp


def blob(size: int = 32) -> torch.Tensor:
    """A bright off-centre square on black, [1,1,S,S]."""
    img = torch.zeros(1, 1, size, size)
    img[..., 8:16, 10:20] = 1.0
    return img


def test_affine_of_psi_hand_computed():
    psi = torch.tensor([[1.1, 0.9, 0.05, -0.02, math.pi / 6]])
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    expected = torch.tensor([[[1.1 * c, -0.9 * s, 0.05], [1.1 * s, 0.9 * c, -0.02]]])
    assert torch.allclose(psi_to_affine(psi), expected, atol=1e-6)
    assert torch.allclose(psi_to_affine(psi), affine_matrix(psi))  # same convention as the world


def test_identity_warp_is_identity_and_translation_moves_content():
    img = blob()
    assert torch.allclose(warp(img, torch.tensor([IDENTITY_PSI])), img, atol=1e-5)
    # sampling at x + tx moves content left by tx * S / 2 pixels
    shifted = warp(img, torch.tensor([[1.0, 1.0, 0.25, 0.0, 0.0]]))
    assert torch.allclose(shifted[..., 8:16, 6:16], torch.ones(1, 1, 8, 10), atol=1e-5)
    assert shifted[..., :, 16:].abs().max() < 1e-5


def test_alignment_loss_is_zero_at_the_true_psi_of_a_posed_image():
    canonical = blob(64)
    psi = torch.tensor([[1.0, 1.0, 0.125, -0.0625, 0.0]])  # whole-pixel shifts: exact
    posed = world_warp(canonical, pose_matrix(psi))
    assert alignment_loss(posed, psi, canonical) < 1e-8
    assert alignment_loss(posed, torch.tensor([IDENTITY_PSI]), canonical) > 1e-3


def test_alignment_loss_does_not_charge_for_the_band_a_zoom_out_reveals():
    grey = torch.full((1, 1, 32, 32), 0.6)
    zoom_out = torch.tensor([[1.2, 1.2, 0.0, 0.0, 0.0]])
    assert alignment_loss(grey, zoom_out, grey) < 1e-10  # border padding: still all grey
    assert torch.nn.functional.mse_loss(warp(grey, zoom_out), grey) > 0.01  # black padding would charge it


def test_net_starts_at_identity_and_gradients_reach_the_backbone():
    net = PostureNet(PostureConfig(input_size=32))
    x = torch.rand(2, 1, 32, 32)
    psi = net(x)
    assert torch.allclose(psi, torch.tensor([IDENTITY_PSI] * 2))
    alignment_loss(x, psi, blob()).backward()
    assert net.backbone.fc.weight.grad.abs().sum() > 0
