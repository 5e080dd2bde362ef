"""Diversity as MS-SSIM among images generated for the same prompt (the paper's Table 2a).

MS-SSIM (Wang, Simoncelli & Bovik, 2003) through torchmetrics'
``multiscale_structural_similarity_index_measure``. As in the CXRL paper (and
RoentGen), MS-SSIM is averaged over all pairs of images generated for one prompt:
a lower value means the generator produces more varied images for the same report.

Scale choice for small images. The standard setting (Gaussian window 11, sigma 1.5,
5 scales with Wang et al.'s weights) needs a side of at least 176 px in torchmetrics.
For smaller images we keep the window and drop the coarsest scales: we use the
largest number of scales ``n`` for which the coarsest scale is still at least one
window (11 px) wide and torchmetrics accepts the size, with
weights = the first ``n`` standard weights renormalised to sum to 1 (so the result
stays a weighted geometric mean of per-scale terms and ``n = 5`` is exactly the
standard metric). Resulting scales: 256 px -> 5, 128 px -> 4, 64 px -> 3, 32 px -> 2.
Shrinking the window instead would keep 5 scales but degrade every scale's local
statistics (at 64 px the window would have to be 3x3). Images are never resized.
``data_range`` is fixed to 1 (images are in [0,1]), not estimated per pair.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from cxrl import imaging

log = logging.getLogger(__name__)

WANG_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL_SIZE = 11
SIGMA = 1.5


@dataclass(frozen=True)
class MsssimSettings:
    """The MS-SSIM parameters used for one image size."""

    kernel_size: int
    sigma: float
    betas: tuple[float, ...]  # one weight per scale, finest first

    @property
    def scales(self) -> int:
        return len(self.betas)


def _fits(side: int, n: int, kernel: int) -> bool:
    # Ours: the coarsest scale is at least one window wide. torchmetrics' own check
    # (ssim.py): side >= 2**n and side // max(1, n-1)**2 > kernel-1.
    coarse_ok = side // 2 ** (n - 1) >= kernel
    return coarse_ok and side >= 2**n and side // max(1, n - 1) ** 2 > kernel - 1


def settings_for(height: int, width: int) -> MsssimSettings:
    """Standard MS-SSIM when the image allows it, otherwise the fewest-dropped-scales variant."""
    side = min(int(height), int(width))
    for n in range(len(WANG_BETAS), 0, -1):
        if _fits(side, n, KERNEL_SIZE):
            betas = WANG_BETAS[:n]
            total = sum(betas)
            betas = WANG_BETAS if n == len(WANG_BETAS) else tuple(b / total for b in betas)
            return MsssimSettings(kernel_size=KERNEL_SIZE, sigma=SIGMA, betas=betas)
    raise ValueError(f"images of {height}x{width} are too small for MS-SSIM; need a side of at least 11 px")


def msssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of each pair ``x[i], y[i]``: ``[B,1,H,W]`` x2 in [0,1] -> ``[B]``."""
    imaging.validate(x, "x")
    imaging.validate(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"MS-SSIM needs images of one shape, got {list(x.shape)} and {list(y.shape)}")
    s = settings_for(x.shape[-2], x.shape[-1])
    out = multiscale_structural_similarity_index_measure(
        x.double(),
        y.double(),
        gaussian_kernel=True,
        sigma=s.sigma,
        kernel_size=s.kernel_size,
        reduction="none",
        data_range=1.0,
        betas=s.betas,
    )
    return out.float()  # [B]


def pairwise_msssim(images: torch.Tensor) -> float:
    """Mean MS-SSIM over all unordered pairs of ``[K,1,H,W]`` images (K >= 2)."""
    k = images.shape[0]
    if k < 2:
        raise ValueError(f"MS-SSIM diversity needs at least 2 images per prompt, got {k}; raise --samples")
    pairs = list(itertools.combinations(range(k), 2))
    i = torch.tensor([p[0] for p in pairs])
    j = torch.tensor([p[1] for p in pairs])
    return float(msssim(images[i], images[j]).mean())


def prompt_diversity(groups: list[torch.Tensor]) -> np.ndarray:
    """Per-prompt mean pairwise MS-SSIM: a list of ``[K,1,H,W]`` groups -> ``[N]`` float64."""
    if not groups:
        raise ValueError("no image groups given")
    return np.array([pairwise_msssim(g) for g in groups], dtype=np.float64)
