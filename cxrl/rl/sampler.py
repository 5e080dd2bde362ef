"""Trajectory sampling for DDPO: DDIM eta=1 with classifier-free guidance, keeping latents and log-probs.

Every image has an integer seed from which its initial latent x_T is drawn and, unless a separate
step seed is given, its per-step DDIM noise too. The anchor's image for (report, seed) is therefore a
fixed function that may be cached. During training the policy shares only x_T with the anchor and
draws its per-step noise from fresh step seeds: given x_T, the anchor's reward is then independent of
the policy's actions (the steps), a valid REINFORCE baseline that removes the variance x_T causes.
Sharing the step noise as well would make policy and anchor images nearly equal at the start, so the
comparative reward, and with it the policy gradient, would almost cancel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cxrl.imaging import from_diffusion
from cxrl.rl.ddim import ddim_step_logprob
from cxrl.rl.policy import Policy

if TYPE_CHECKING:
    from cxrl.rl.config import SamplingSettings


@dataclass
class Trajectory:
    """One sampled batch. Images are the decoded final latents, greyscale in [0, 1]."""

    latents: torch.Tensor  # [B, T+1, C, h, w] x_T ... x_0
    log_probs: torch.Tensor  # [B, T] log p(x_{t-1} | x_t) of each step taken
    timesteps: torch.Tensor  # [T] long, shared by the batch
    images: torch.Tensor  # [B, 1, H, W] float in [0, 1]
    prompt_embeds: torch.Tensor  # [B, M, d] frozen text-encoder output c_p (ACE is added at train time)
    seeds: list[int]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def take(self, rows: Sequence[int]) -> Trajectory:
        """The trajectories at ``rows``, in that order."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return Trajectory(
            latents=self.latents[idx],
            log_probs=self.log_probs[idx],
            timesteps=self.timesteps,
            images=self.images[idx],
            prompt_embeds=self.prompt_embeds[idx],
            seeds=[self.seeds[i] for i in rows],
        )


def seeded_noise(
    seeds: Sequence[int],
    shape: tuple[int, ...],
    num_steps: int,
    device: torch.device | str = "cpu",
    step_seeds: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise of each image -> (initial [B, *shape], per-step [T, B, *shape]).

    The initial latent comes from ``seeds``; the per-step noise from ``step_seeds`` when given, else
    from the same generator as the initial latent (continuing after it).
    """
    if step_seeds is not None and len(step_seeds) != len(seeds):
        raise ValueError(f"got {len(step_seeds)} step seeds for {len(seeds)} seeds; give one per image")
    initial, steps = [], []
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))
        initial.append(torch.randn(shape, generator=gen))
        if step_seeds is not None:
            gen = torch.Generator().manual_seed(int(step_seeds[i]))
        steps.append(torch.randn((num_steps, *shape), generator=gen))
    return torch.stack(initial).to(device), torch.stack(steps, dim=1).to(device)


def latent_shape(policy: Policy) -> tuple[int, int, int]:
    unet = policy.unet
    size = unet.config.sample_size
    return (unet.config.in_channels, size, size)


@torch.no_grad()
def sample(
    policy: Policy,
    prompt_embeds: torch.Tensor,  # [B, M, d] from policy.encode_prompts
    seeds: Sequence[int],
    num_steps: int = 20,
    guidance_scale: float = 5.0,
    eta: float = 1.0,
    decode: bool = True,
    step_seeds: Sequence[int] | None = None,
) -> Trajectory:
    """Sample with the policy in its current mode (use ``with policy.anchor():`` for the anchor).

    ``seeds`` fix each image's initial latent; ``step_seeds`` (optional) its per-step noise.
    """
    b = prompt_embeds.shape[0]
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} prompts; give one seed per image")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scheduler = policy.pipe.scheduler
    scheduler.set_timesteps(num_steps, device=policy.device)
    timesteps = scheduler.timesteps.clone()  # [T] on the policy's device, for the UNet
    steps_cpu = timesteps.cpu()  # [T] for the DDIM arithmetic: no device-to-host copy (sync) per step
    init, step_noise = seeded_noise(seeds, latent_shape(policy), num_steps, policy.device, step_seeds)
    x = init * scheduler.init_noise_sigma  # [B, C, h, w] float32 (the UNet may run in fp16)
    latents, log_probs = [x], []
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(x, t)
        eps = policy.predict_noise(model_in, t, prompt_embeds, guidance_scale)
        out = ddim_step_logprob(scheduler, eps, steps_cpu[i], x, eta=eta, variance_noise=step_noise[i])
        x = out.prev_sample
        latents.append(x)
        log_probs.append(out.log_prob)
    images = from_diffusion(policy.decode(x)) if decode else torch.empty(0)
    return Trajectory(
        latents=torch.stack(latents, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        timesteps=steps_cpu.long(),
        images=images,
        prompt_embeds=prompt_embeds,
        seeds=[int(s) for s in seeds],
    )


def concat(trajectories: Sequence[Trajectory]) -> Trajectory:
    """Join sub-batches sampled with the same schedule into one trajectory batch."""
    if not trajectories:
        raise ValueError("nothing to concatenate")
    first = trajectories[0].timesteps
    if any(not torch.equal(t.timesteps, first) for t in trajectories):
        raise ValueError("trajectories were sampled with different timestep schedules")
    return Trajectory(
        latents=torch.cat([t.latents for t in trajectories]),
        log_probs=torch.cat([t.log_probs for t in trajectories]),
        timesteps=first,
        images=torch.cat([t.images for t in trajectories]),
        prompt_embeds=torch.cat([t.prompt_embeds for t in trajectories]),
        seeds=[s for t in trajectories for s in t.seeds],
    )


def sample_images(
    policy: Policy,
    reports: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingSettings,
    anchor: bool = False,
) -> torch.Tensor:
    """Images ``[N, 1, H, W]`` of ``reports`` with their noise ``seeds``, ``sampling.batch_size`` at a
    time, in the policy's mode or (``anchor``) as the frozen anchor."""
    out = []
    with policy.anchor() if anchor else contextlib.nullcontext():
        for i in range(0, len(reports), sampling.batch_size):
            embeds = policy.encode_prompts(list(reports[i : i + sampling.batch_size]))  # [b, M, d]
            seeds_i = list(seeds[i : i + sampling.batch_size])
            traj = sample(policy, embeds, seeds_i, sampling.num_steps, sampling.guidance_scale, sampling.eta)
            out.append(traj.images)
    return torch.cat(out)
