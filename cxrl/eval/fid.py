"""Fréchet distance on torchxrayvision DenseNet features (the paper's FID, Table 2).

FID (Heusel et al., 2017) fits a Gaussian to each feature set and measures

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

The CXRL paper computes it on a CXR-specific DenseNet-121 (torchxrayvision, Cohen et
al.) rather than Inception; like RoentGen's own evaluation we take the pooled
``features2`` output (ReLU + global average pool of the last dense block). In the
default world the extractor is the default-world diagnostic DenseNet; with real
weights it is ``densenet121-res224-all`` (1024 features).

Numerics: everything is float64. ``Tr((S_1 S_2)^{1/2})`` is computed as
``sum(sqrt(eig(R S_2 R)))`` with ``R = S_1^{1/2}`` from a symmetric eigen-decomposition;
``R S_2 R`` is symmetric positive semi-definite and similar to ``S_1 S_2``, so its
eigenvalues are real and the result needs no complex arithmetic or ``sqrtm``
iterations. Tiny negative eigenvalues from round-off are clipped to zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from cxrl import imaging

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GaussianStats:
    """Mean ``[D]`` and covariance ``[D,D]`` (float64) of a feature set of ``n`` rows."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def gaussian_stats(features: np.ndarray | torch.Tensor) -> GaussianStats:
    """Features ``[N,D]`` -> mean and unbiased covariance (divides by N-1, as ``np.cov``)."""
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features)
    x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows to estimate a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return GaussianStats(mu=mu, sigma=sigma, n=x.shape[0])


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    sym = (sigma + sigma.T) * 0.5
    vals, vecs = np.linalg.eigh(sym)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def trace_sqrt_product(sqrt_sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S_1 S_2)^{1/2})`` given ``S_1^{1/2}`` (eigenvalues of the similar matrix R S_2 R)."""
    m = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    vals = np.linalg.eigvalsh((m + m.T) * 0.5)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {list(mu1.shape)}, mu2 {list(mu2.shape)}, "
            f"sigma1 {list(sigma1.shape)}, sigma2 {list(sigma2.shape)}; features must share one dimension"
        )
    diff = mu1 - mu2
    tr = np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(psd_sqrt(sigma1), sigma2)
    return float(diff @ diff + tr)


class FrechetReference:
    """A fixed reference set (real test images' features): distances to many candidate sets.

    ``S_ref^{1/2}`` is computed once, so bootstrap resamples cost one eigen-decomposition each.
    """

    def __init__(self, features: np.ndarray | torch.Tensor):
        self.stats = gaussian_stats(features)
        self._sqrt = psd_sqrt(self.stats.sigma)
        self._trace = float(np.trace(self.stats.sigma))

    def distance(self, features: np.ndarray | torch.Tensor) -> float:
        """FID of candidate features ``[M,D]`` against the reference."""
        other = gaussian_stats(features)
        if other.mu.shape != self.stats.mu.shape:
            raise ValueError(
                f"candidate features have {other.mu.shape[0]} dimensions, reference has {self.stats.mu.shape[0]}"
            )
        diff = other.mu - self.stats.mu
        tr = self._trace + np.trace(other.sigma) - 2.0 * trace_sqrt_product(self._sqrt, other.sigma)
        return float(diff @ diff + tr)


def fid(features1: np.ndarray | torch.Tensor, features2: np.ndarray | torch.Tensor) -> float:
    """FID between two feature matrices ``[N,D]`` and ``[M,D]``."""
    return FrechetReference(features2).distance(features1)


class XrvFeatureExtractor:
    """Pooled ``features2`` of a torchxrayvision DenseNet for images ``[B,1,H,W]`` in [0,1].

    ``input_size`` is the classifier's resolution (224 for released xrv weights; the
    default-world model's configured size); images are resized through cxrl.imaging.
    """

    def __init__(self, model: torch.nn.Module, input_size: int, batch_size: int = 32):
        if not hasattr(model, "features2"):
            raise ValueError(
                f"{type(model).__name__} has no features2(); pass a torchxrayvision DenseNet "
                "(xrv.models.DenseNet) as the FID feature model"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.input_size = int(input_size)
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        """Feature dimension (channels of the last dense block)."""
        return int(self.model.classifier.in_features)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B,1,H,W]`` in [0,1] -> features ``[B,D]`` float32 on CPU."""
        imaging.validate(images)
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            chunk = images[start : start + self.batch_size]
            x = imaging.to_xrv(chunk, size=self.input_size).to(device)  # [b,1,S,S] in [-1024,1024]
            out.append(self.model.features2(x).float().cpu())  # [b,D]
        return torch.cat(out)
