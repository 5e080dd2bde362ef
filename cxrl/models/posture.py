"""Posture network: a ResNet-18 that predicts the affine psi aligning a CXR to the canonical CXR.

CXRL (Han et al., MICCAI 2024, Sec. 2.3, "posture alignment feedback", following Liu et al.):
the network predicts psi = (sx, sy, tx, ty, theta); the image warped by the affine of psi
(``affine_grid`` / ``grid_sample``) should match the canonical CXR (mean of training CXRs), so
the network is trained with the L2 distance between the warped image and the canonical one.

Convention (shared with the default world's ground-truth posture): the affine of psi is

    A(psi) = [[sx*cos(theta), -sy*sin(theta), tx],
              [sx*sin(theta),  sy*cos(theta), ty]]

in the normalised [-1, 1] coordinates of ``affine_grid`` (align_corners=False); warping samples
``image(A @ [x, y, 1])`` at each output pixel (x, y). psi = (1, 1, 0, 0, 0) is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchvision.models import resnet18

from cxrl.config import ConfigModel

IDENTITY_PSI: tuple[float, ...] = (1.0, 1.0, 0.0, 0.0, 0.0)
PSI_NAMES: tuple[str, ...] = ("sx", "sy", "tx", "ty", "theta")


class PostureConfig(ConfigModel):
    """Architecture of the posture network (weights-independent)."""

    input_size: int = Field(128, ge=16, description="square input resolution in pixels the net sees")
    head_scale: float = Field(
        0.1, gt=0, description="the head's raw output is multiplied by this and added to the identity psi"
    )


def psi_to_affine(psi: torch.Tensor) -> torch.Tensor:
    """psi ``[B,5]`` (sx, sy, tx, ty, theta) -> affine matrices ``[B,2,3]`` (see module docstring)."""
    if psi.ndim != 2 or psi.shape[1] != 5:
        raise ValueError(f"psi must be [B, 5] (sx, sy, tx, ty, theta), got {list(psi.shape)}")
    sx, sy, tx, ty, theta = psi.unbind(dim=1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    row0 = torch.stack([sx * cos, -sy * sin, tx], dim=1)  # [B,3]
    row1 = torch.stack([sx * sin, sy * cos, ty], dim=1)  # [B,3]
    return torch.stack([row0, row1], dim=1)  # [B,2,3]


def warp(images: torch.Tensor, psi: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Warp ``images`` ``[B,C,H,W]`` by the affine of ``psi`` ``[B,5]``; outside the picture:
    ``padding="zeros"`` (black) or ``"border"`` (the nearest edge pixel)."""
    affine = psi_to_affine(psi).to(images.dtype)
    grid = F.affine_grid(affine, list(images.shape), align_corners=False)  # [B,H,W,2]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


class PostureNet(nn.Module):
    """torchvision ResNet-18 with a 1-channel stem; predicts psi = identity + head_scale * head(x)."""

    def __init__(self, cfg: PostureConfig | None = None):
        super().__init__()
        self.cfg = cfg or PostureConfig()
        net = resnet18(weights=None, num_classes=5)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(net.fc.weight)  # start at the identity transform
        nn.init.zeros_(net.fc.bias)
        self.backbone = net
        self.register_buffer("identity", torch.tensor(IDENTITY_PSI), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B,1,S,S]`` in [0,1] at ``cfg.input_size`` -> psi ``[B,5]``."""
        x = images * 2.0 - 1.0  # model-internal standardisation to [-1, 1]
        delta = self.backbone(x)  # [B,5]
        return self.identity + self.cfg.head_scale * delta


def alignment_loss(images: torch.Tensor, psi: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``images`` warped by ``psi`` and the ``canonical`` ``[1,1,H,W]`` CXR.

    Pixels whose source lies outside the picture take the nearest edge pixel ("border"), not
    black: with black, every zoom-out (s > 1) or shift is charged for the empty band it
    reveals, which pulls the minimum towards s < 1 (on the v1 default world the per-image
    optimum of sy was biased by -0.079 with black padding, -0.002 with border padding;
    docs/results/posture-default-world.md).
    """
    warped = warp(images, psi, padding="border")  # [B,1,H,W]
    return F.mse_loss(warped, canonical.expand_as(warped))
