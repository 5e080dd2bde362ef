"""The PPO-clipped policy-gradient loss of DDPO (Black et al. 2024, Eq. 4; Schulman et al. 2017).

For one denoising step of each image, with ratio ``rho = exp(log p_theta - log p_old)`` and clipped
advantage ``A``, the loss is ``mean(max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)))``. Its gradient at
``rho = 1`` is the REINFORCE estimate of CXRL's Eq. 2 for that step. Optional per-sample weights
scale each (image, step) term (TempFlow-GRPO's noise-level weighting of the steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossOutput:
    loss: torch.Tensor  # [] to minimise
    approx_kl: torch.Tensor  # [] 0.5 * mean((log p - log p_old)^2), detached
    clipfrac: torch.Tensor  # [] share of ratios outside the clip range, detached


def ppo_loss(
    log_prob: torch.Tensor,  # [B] under the current policy
    old_log_prob: torch.Tensor,  # [B] recorded while sampling
    advantages: torch.Tensor,  # [B]
    clip_range: float = 1e-4,
    adv_clip_max: float = 5.0,
    weights: torch.Tensor | None = None,  # [B] per-sample loss weights (per-timestep weighting)
) -> LossOutput:
    if not log_prob.shape == old_log_prob.shape == advantages.shape:
        raise ValueError(
            f"shapes differ: log_prob {list(log_prob.shape)}, old {list(old_log_prob.shape)}, "
            f"advantages {list(advantages.shape)}"
        )
    if clip_range <= 0 or adv_clip_max <= 0:
        raise ValueError(f"clip_range and adv_clip_max must be > 0, got {clip_range}, {adv_clip_max}")
    adv = advantages.clamp(-adv_clip_max, adv_clip_max)
    diff = log_prob - old_log_prob
    ratio = torch.exp(diff)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    per_sample = torch.maximum(unclipped, clipped)  # [B]
    if weights is not None:
        if weights.shape != per_sample.shape:
            raise ValueError(f"weights {list(weights.shape)} must match the batch {list(per_sample.shape)}")
        per_sample = per_sample * weights
    loss = per_sample.mean()
    return LossOutput(
        loss=loss,
        approx_kl=0.5 * (diff.detach() ** 2).mean(),
        clipfrac=((ratio.detach() - 1.0).abs() > clip_range).float().mean(),
    )


def gaussian_kl(
    mean: torch.Tensor,  # [B, ...] mean of the policy's step Gaussian
    ref_mean: torch.Tensor,  # [B, ...] mean of the reference (anchor) step Gaussian
    std: torch.Tensor,  # [B, 1, ...] their shared standard deviation
) -> torch.Tensor:
    """KL(N(mean, std^2) || N(ref_mean, std^2)) per sample ``[B]``, averaged over the elements.

    Two Gaussians of equal variance differ only in their means: ``(mean - ref_mean)^2 / (2 std^2)``
    per element. Averaged (not summed) over elements, like the DDIM step's log-prob.
    """
    if mean.shape != ref_mean.shape:
        raise ValueError(f"means differ in shape: {list(mean.shape)} vs {list(ref_mean.shape)}")
    kl = (mean - ref_mean.detach()) ** 2 / (2 * std**2)
    return kl.mean(dim=tuple(range(1, mean.ndim)))
