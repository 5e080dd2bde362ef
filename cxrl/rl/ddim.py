"""A DDIM step that also returns the log-probability of the step taken (DDPO, Black et al. 2024).

DDIM (Song et al. 2021, Eq. 12 with sigma_t of Eq. 16) with eta > 0 is a Gaussian policy
``p(x_{t-1} | x_t, c) = N(mu_theta(x_t, t, c), sigma_t^2 I)``. DDPO treats each denoising step as
an action and needs ``log p`` of the sampled ``x_{t-1}``; the CXRL policy gradient (paper Eq. 2) sums
its gradient over the trajectory. As in DDPO the log-density is averaged (not summed) over the latent
elements, which sets the scale of the PPO ratio and of its clip range.

The mean is the same arithmetic as ``diffusers.DDIMScheduler.step`` (checked by a golden test), with
per-sample timesteps so a training minibatch may mix steps, the correct final-step alpha
(``final_alpha_cumprod`` when the previous timestep is negative) and float32 arithmetic throughout
(the PPO clip range of 1e-4 is below fp16 resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # [B, C, h, w] x_{t-1}
    log_prob: torch.Tensor  # [B] mean over elements of log N(x_{t-1}; mean, std^2)
    mean: torch.Tensor  # [B, C, h, w]
    std: torch.Tensor  # [B, 1, 1, 1]


def _per_sample(values: torch.Tensor, index: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gather ``values[index]`` ([B]) and reshape to broadcast over a [B, ...] tensor of ``ndim`` dims."""
    return values[index].reshape(-1, *([1] * (ndim - 1)))


def _alphas64(scheduler: DDIMScheduler) -> torch.Tensor:
    """The scheduler's alphas_cumprod in float64 on the CPU, converted once per scheduler."""
    cached = getattr(scheduler, "_cxrl_alphas64", None)
    if cached is None or cached.shape != scheduler.alphas_cumprod.shape:
        cached = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
        scheduler._cxrl_alphas64 = cached
    return cached


def _mean_and_std(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,  # [B, C, h, w]
    timestep: int | torch.Tensor,  # scalar or [B]
    sample: torch.Tensor,  # [B, C, h, w] x_t
    eta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DDIM step's mean [B, C, h, w] and standard deviation [B, 1, 1, 1] (zero for eta = 0)."""
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) before stepping")
    if scheduler.config.thresholding:
        raise ValueError("dynamic thresholding is not supported; use a scheduler with thresholding=False")
    model_output, sample = (
        model_output.float(),
        sample.float(),
    )  # log-probs need fp32 whatever the UNet ran in
    b, ndim = sample.shape[0], sample.ndim
    # pass CPU timesteps: a device tensor here costs a device-to-host copy (a GPU sync) every step
    t = torch.as_tensor(timestep, device="cpu").long().reshape(-1).expand(b)  # [B]
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps  # [B]
    alphas = _alphas64(scheduler)  # [T_train]
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64)
    a_t = _per_sample(alphas, t, ndim)
    a_prev = torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)], final).reshape(a_t.shape)
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance.sqrt()
    if eta > 0 and bool((std <= 0).any()):
        raise ValueError(
            "a DDIM step has zero variance (set_alpha_to_one=True?); load with cxrl's ddim_scheduler"
        )
    a_t, a_prev, std = (x.to(sample.device, sample.dtype) for x in (a_t, a_prev, std))

    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()
        eps = model_output
    elif kind == "v_prediction":
        x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
        eps = a_t.sqrt() * model_output + (1 - a_t).sqrt() * sample
    elif kind == "sample":
        x0 = model_output
        eps = (sample - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    else:
        raise ValueError(f"unsupported prediction_type {kind!r}; use epsilon, v_prediction or sample")
    if scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps  # [B, C, h, w]
    return mean, std


def ddim_std(scheduler: DDIMScheduler, timesteps: torch.Tensor, eta: float) -> torch.Tensor:
    """Each step's standard deviation sigma_t [T] (float64) of a schedule's ``timesteps`` [T]."""
    x = torch.zeros(len(timesteps), 1)
    return _mean_and_std(scheduler, x, timesteps.cpu(), x, eta)[1].reshape(-1).double()


def ddim_step_deterministic(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,  # [B, C, h, w] the UNet's (guided) prediction
    timestep: int | torch.Tensor,  # scalar or [B]
    sample: torch.Tensor,  # [B, C, h, w] x_t
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0, Song et al. 2021 Eq. 12): x_{t-1} [B, C, h, w], no log-prob.

    The steps outside a stochastic window (:mod:`cxrl.rl.sampler`) are these: the same mean
    arithmetic as the stochastic step with sigma_t = 0.
    """
    mean, _ = _mean_and_std(scheduler, model_output, timestep, sample, 0.0)
    return mean


def ddim_step_logprob(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,  # [B, C, h, w] the UNet's (guided) prediction
    timestep: int | torch.Tensor,  # scalar or [B]
    sample: torch.Tensor,  # [B, C, h, w] x_t
    eta: float = 1.0,
    prev_sample: torch.Tensor | None = None,  # [B, C, h, w] x_{t-1} to score instead of sampling
    variance_noise: torch.Tensor | None = None,  # [B, C, h, w] standard normal noise for sampling
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One stochastic DDIM step; returns x_{t-1} and its log-probability under the step's Gaussian.

    With ``prev_sample`` given (training), that sample is scored; otherwise one is drawn as
    ``mean + std * variance_noise`` (noise drawn from ``generator`` when not given).
    """
    if eta <= 0:
        raise ValueError(f"eta must be > 0 for a stochastic policy with a log-probability, got {eta}")
    mean, std = _mean_and_std(scheduler, model_output, timestep, sample, eta)
    ndim = sample.ndim
    if prev_sample is None:
        if variance_noise is None:
            variance_noise = torch.randn(
                sample.shape, generator=generator, device=sample.device, dtype=torch.float32
            )
        prev_sample = mean + std * variance_noise.float()
    prev_sample = prev_sample.float()
    log_prob = -((prev_sample.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - LOG_SQRT_2PI
    log_prob = log_prob.mean(dim=tuple(range(1, ndim)))  # [B]
    return StepOutput(prev_sample=prev_sample, log_prob=log_prob, mean=mean, std=std)
