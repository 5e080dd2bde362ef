"""Posture psi = (sx, sy, tx, ty, theta): the affine that ALIGNS an image to the canonical frame.

Convention (DESIGN.md; used by the world's ground truth and the posture reward):

    M(psi) = [[sx cos(theta), -sy sin(theta), tx],
              [sx sin(theta),  sy cos(theta), ty]]            (2 x 3, ``affine_matrix``)

is a ``torch.nn.functional.affine_grid`` matrix (``align_corners=False``): for each
output pixel at normalised coordinates p in [-1, 1]^2 (x to the right, y downwards)
the aligned image samples the input at ``M(psi) [p; 1]``. So

    aligned = grid_sample(image, affine_grid(M(psi), size))          (``align``)

i.e. ``aligned(p) = image(R(theta) diag(sx, sy) p + t)``; theta in radians, (tx, ty)
in the normalised coordinates of ``affine_grid``. psi = (1, 1, 0, 0, 0) is the identity.

The world renders a canonical (unposed) chest ``canon`` and then POSES it with the
inverse warp, ``posed(q) = canon(M(psi)^-1 q)`` (``pose_matrix``), so that aligning the
posed image with its recorded psi gives back ``canon`` wherever ``M(psi) p`` stays in
the picture. The reward ``r_align`` (cxrl.rewards.types) is 0 exactly at the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PSI_NAMES: tuple[str, ...] = ("sx", "sy", "tx", "ty", "theta")
IDENTITY: tuple[float, ...] = (1.0, 1.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class PostureRanges:
    """Ranges of the random posture of world images (like real radiographs)."""

    scale: tuple[float, float] = (0.85, 1.15)  # common scale s; sx = s * a, sy = s / a
    aspect: float = 0.04  # |log a| at most this (small anisotropy)
    shift: float = 0.1  # |tx|, |ty| at most this (normalised units)
    rotation_deg: float = 10.0  # |theta| at most this many degrees

    def sample(self, rng: np.random.Generator) -> tuple[float, ...]:
        s = rng.uniform(*self.scale)
        a = math.exp(rng.uniform(-self.aspect, self.aspect))
        sx = float(np.clip(s * a, *self.scale))
        sy = float(np.clip(s / a, *self.scale))
        tx, ty = (float(v) for v in rng.uniform(-self.shift, self.shift, size=2))
        theta = float(rng.uniform(-1, 1) * math.radians(self.rotation_deg))
        return (sx, sy, tx, ty, theta)


def affine_matrix(psi: torch.Tensor) -> torch.Tensor:
    """psi ``[B, 5]`` -> aligning affine_grid matrices ``[B, 2, 3]`` (see the module docstring)."""
    if psi.ndim != 2 or psi.shape[1] != 5:
        raise ValueError(f"psi must be [B, 5] (sx, sy, tx, ty, theta), got {list(psi.shape)}")
    sx, sy, tx, ty, th = psi.unbind(1)
    c, s = torch.cos(th), torch.sin(th)
    row0 = torch.stack([sx * c, -sy * s, tx], dim=1)
    row1 = torch.stack([sx * s, sy * c, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def pose_matrix(psi: torch.Tensor) -> torch.Tensor:
    """psi ``[B, 5]`` -> the inverse affine ``[B, 2, 3]`` that POSES a canonical image."""
    m = affine_matrix(psi)
    lin, t = m[:, :, :2], m[:, :, 2:]
    inv = torch.linalg.inv(lin)
    return torch.cat([inv, -inv @ t], dim=2)


def warp(images: torch.Tensor, matrices: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """grid_sample ``images [B, C, H, W]`` with affine_grid ``matrices [B, 2, 3]`` (bilinear, align_corners=False)."""
    grid = F.affine_grid(matrices.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def align(images: torch.Tensor, psi: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Warp posed ``images [B, C, H, W]`` back to the canonical frame with their psi ``[B, 5]``."""
    return warp(images, affine_matrix(psi), padding)


def valid_region(psi: torch.Tensor, size: int, inset: float = 0.0) -> torch.Tensor:
    """bool ``[B, size, size]``: aligned pixels whose source ``M(psi) p`` lies inside the image (minus ``inset``)."""
    base = torch.eye(2, 3).expand(psi.shape[0], 2, 3)
    p = F.affine_grid(base, [psi.shape[0], 1, size, size], align_corners=False)  # [B, H, W, 2]
    m = affine_matrix(psi.float())
    src = torch.einsum("bij,bhwj->bhwi", m[:, :, :2], p) + m[:, None, None, :, 2]
    return (src.abs() <= 1 - inset).all(dim=-1)
