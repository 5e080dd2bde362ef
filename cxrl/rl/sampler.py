"""Trajectory sampling for DDPO: DDIM eta=1 with classifier-free guidance, keeping latents and log-probs.

Every image has an integer seed from which its initial latent x_T is drawn and, unless a separate
step seed is given, its per-step DDIM noise too. The anchor's image for (report, seed) is therefore a
fixed function that may be cached. During training the policy shares only x_T with the anchor and
draws its per-step noise from fresh step seeds: given x_T, the anchor's reward is then independent of
the policy's actions (the steps), a valid REINFORCE baseline that removes the variance x_T causes.
Sharing the step noise as well would make policy and anchor images nearly equal at the start, so the
comparative reward, and with it the policy gradient, would almost cancel.

A :class:`Sampler` says how one trajectory is drawn: its DDIM steps, guidance and the eta of each
step. The paper's DDPO samples every step with eta = 1 and trains on all of them. The efficient
recipes since (Flow-GRPO-Fast, Liu et al. 2025; MixGRPO, Li et al. 2025) make only a small window of
steps stochastic (eta > 0, trained) and run plain deterministic DDIM (eta = 0) elsewhere; with
``branch`` a report's group of images shares its initial noise, so the deterministic steps before the
window are computed once per group and the group branches at the window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cxrl.imaging import from_diffusion
from cxrl.rl.ddim import ddim_step_deterministic, ddim_step_logprob
from cxrl.rl.policy import Policy

if TYPE_CHECKING:
    from cxrl.rl.config import SamplingSettings


@dataclass(frozen=True)
class Sampler:
    """How a trajectory is drawn: ``num_steps`` DDIM steps at ``guidance_scale``, step i with ``etas[i]``.

    A step with eta > 0 is a Gaussian action with a log-probability (trained); eta = 0 is the
    deterministic DDIM step (log-prob 0, never trained).
    """

    num_steps: int
    guidance_scale: float
    etas: tuple[float, ...]  # [T]

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if len(self.etas) != self.num_steps or any(e < 0 for e in self.etas):
            raise ValueError(f"give one eta >= 0 per step ({self.num_steps}), got {self.etas}")

    @classmethod
    def uniform(cls, num_steps: int, guidance_scale: float, eta: float) -> Sampler:
        """Every step with the same eta (DDPO's sampler when eta = 1; evaluation)."""
        return cls(num_steps, guidance_scale, (float(eta),) * num_steps)

    @classmethod
    def evaluation(cls, s: SamplingSettings) -> Sampler:
        """The held-out evaluation's sampler: ``num_steps`` at ``guidance_scale``, eta everywhere."""
        return cls.uniform(s.num_steps, s.guidance_scale, s.eta)

    @classmethod
    def training(cls, s: SamplingSettings, epoch: int) -> Sampler:
        """The policy's training sampler at ``epoch``: the stochastic window (all steps without one)."""
        steps, guidance = s.train_steps, s.train_guidance
        if not s.window:
            return cls.uniform(steps, guidance, s.eta)
        start = s.window_at(epoch)
        return cls(
            steps, guidance, tuple(s.eta if start <= i < start + s.window else 0.0 for i in range(steps))
        )

    @classmethod
    def anchor(cls, s: SamplingSettings) -> Sampler:
        """The frozen anchor's sampler in training: the policy's steps and guidance; with a window
        shorter than the trajectory, deterministic DDIM from the shared initial noise (so it does not depend on where the window
        is, and one stored anchor serves a whole branched group), else DDPO's eta at every step."""
        windowed = 0 < s.window < s.train_steps
        return cls.uniform(s.train_steps, s.train_guidance, 0.0 if windowed else s.eta)

    @property
    def stochastic(self) -> torch.Tensor:
        """[T] bool: the steps that are actions with a log-probability."""
        return torch.tensor([e > 0 for e in self.etas])

    @property
    def prefix(self) -> int:
        """Deterministic steps before the first stochastic one (all of them when none is)."""
        return next((i for i, e in enumerate(self.etas) if e > 0), self.num_steps)

    def version(self) -> dict:
        """What names this sampler in an anchor store's version (the uniform form as before)."""
        if len(set(self.etas)) == 1:
            return {"steps": self.num_steps, "guidance": self.guidance_scale, "eta": self.etas[0]}
        return {"steps": self.num_steps, "guidance": self.guidance_scale, "etas": list(self.etas)}


@dataclass
class Trajectory:
    """One sampled batch. Images are the decoded final latents, greyscale in [0, 1]."""

    latents: torch.Tensor  # [B, T+1, C, h, w] x_T ... x_0
    log_probs: torch.Tensor  # [B, T] log p(x_{t-1} | x_t) of each step taken
    timesteps: torch.Tensor  # [T] long, shared by the batch
    images: torch.Tensor  # [B, 1, H, W] float in [0, 1]
    prompt_embeds: torch.Tensor  # [B, M, d] frozen text-encoder output c_p (ACE is added at train time)
    seeds: list[int]
    stochastic: torch.Tensor | None = None  # [T] bool: steps with a log-prob (None: every step)

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def trainable_steps(self) -> torch.Tensor:
        """[S] long: the trajectory steps that are actions (stochastic), in order."""
        steps = self.log_probs.shape[1]
        if self.stochastic is None:
            return torch.arange(steps)
        return torch.nonzero(self.stochastic).flatten()

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
            stochastic=self.stochastic,
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
    sampler: Sampler | None = None,
    groups: Sequence[int] | None = None,
) -> Trajectory:
    """Sample with the policy in its current mode (use ``with policy.anchor():`` for the anchor).

    ``seeds`` fix each image's initial latent; ``step_seeds`` (optional) its per-step noise. A
    ``sampler`` replaces ``num_steps``/``guidance_scale``/``eta`` (a stochastic window). ``groups``
    (one id per image; members share their report and seed) computes the deterministic steps before
    the sampler's first stochastic step once per group: k + G * (T - k) UNet rows for a group of G.
    """
    spec = sampler or Sampler.uniform(num_steps, guidance_scale, eta)
    b = prompt_embeds.shape[0]
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} prompts; give one seed per image")
    scheduler = policy.pipe.scheduler
    scheduler.set_timesteps(spec.num_steps, device=policy.device)
    timesteps = scheduler.timesteps.clone()  # [T] on the policy's device, for the UNet
    steps_cpu = timesteps.cpu()  # [T] for the DDIM arithmetic: no device-to-host copy (sync) per step
    init, step_noise = seeded_noise(seeds, latent_shape(policy), spec.num_steps, policy.device, step_seeds)
    x = init * scheduler.init_noise_sigma  # [B, C, h, w] float32 (the UNet may run in fp16)
    g = spec.guidance_scale

    def step(i: int, x: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = timesteps[i]
        eps = policy.predict_noise(scheduler.scale_model_input(x, t), t, embeds, g)
        if spec.etas[i] == 0:
            return ddim_step_deterministic(scheduler, eps, steps_cpu[i], x), torch.zeros(
                len(x), device=x.device
            )
        out = ddim_step_logprob(
            scheduler, eps, steps_cpu[i], x, eta=spec.etas[i], variance_noise=step_noise[i]
        )
        return out.prev_sample, out.log_prob

    k = spec.prefix if groups is not None else 0
    latents, log_probs = [x], []
    if k > 0:
        rep, inverse = _group_rows(groups, seeds, prompt_embeds)  # [G] rows, [B] row -> group
        xs, embeds = x[rep], prompt_embeds[rep]
        for i in range(k):  # the shared deterministic prefix, once per group
            xs, _ = step(i, xs, embeds)
            latents.append(xs[inverse])
            log_probs.append(torch.zeros(b, device=x.device))
        x = latents[-1]
    for i in range(k, spec.num_steps):
        x, lp = step(i, x, prompt_embeds)
        latents.append(x)
        log_probs.append(lp)
    images = from_diffusion(policy.decode(x)) if decode else torch.empty(0)
    return Trajectory(
        latents=torch.stack(latents, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        timesteps=steps_cpu.long(),
        images=images,
        prompt_embeds=prompt_embeds,
        seeds=[int(s) for s in seeds],
        stochastic=None if all(e > 0 for e in spec.etas) else spec.stochastic,
    )


def _group_rows(
    groups: Sequence[int], seeds: Sequence[int], embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group ids [B] -> (first row of each group [G], each row's group position [B]); members must
    share their seed and report embedding, or their prefixes would differ."""
    if len(groups) != len(seeds):
        raise ValueError(f"got {len(groups)} group ids for {len(seeds)} images; give one per image")
    first: dict[int, int] = {}
    for i, gid in enumerate(groups):
        j = first.setdefault(gid, i)
        if seeds[j] != seeds[i] or not torch.equal(embeds[j], embeds[i]):
            raise ValueError(
                f"images {j} and {i} share group {gid} but not their seed and report: a branched "
                "group shares its initial noise (plan with sampling.branch)"
            )
    pos = {gid: n for n, gid in enumerate(first)}
    return torch.tensor(list(first.values())), torch.tensor([pos[gid] for gid in groups])


def concat(trajectories: Sequence[Trajectory]) -> Trajectory:
    """Join sub-batches sampled with the same schedule into one trajectory batch."""
    if not trajectories:
        raise ValueError("nothing to concatenate")
    first = trajectories[0].timesteps
    if any(not torch.equal(t.timesteps, first) for t in trajectories):
        raise ValueError("trajectories were sampled with different timestep schedules")
    masks = [t.stochastic for t in trajectories]
    if any(
        (m is None) != (masks[0] is None) or (m is not None and not torch.equal(m, masks[0])) for m in masks
    ):
        raise ValueError("trajectories were sampled with different stochastic windows")
    return Trajectory(
        latents=torch.cat([t.latents for t in trajectories]),
        log_probs=torch.cat([t.log_probs for t in trajectories]),
        timesteps=first,
        images=torch.cat([t.images for t in trajectories]),
        prompt_embeds=torch.cat([t.prompt_embeds for t in trajectories]),
        seeds=[s for t in trajectories for s in t.seeds],
        stochastic=trajectories[0].stochastic,
    )


def sample_images(
    policy: Policy,
    reports: Sequence[str],
    seeds: Sequence[int],
    sampling: SamplingSettings,
    anchor: bool = False,
    sampler: Sampler | None = None,
) -> torch.Tensor:
    """Images ``[N, 1, H, W]`` of ``reports`` with their noise ``seeds``, ``sampling.batch_size`` at a
    time, in the policy's mode or (``anchor``) as the frozen anchor; with the evaluation sampler
    unless ``sampler`` is given."""
    spec = sampler or Sampler.evaluation(sampling)
    out = []
    with policy.anchor() if anchor else contextlib.nullcontext():
        for i in range(0, len(reports), sampling.batch_size):
            embeds = policy.encode_prompts(list(reports[i : i + sampling.batch_size]))  # [b, M, d]
            seeds_i = list(seeds[i : i + sampling.batch_size])
            traj = sample(policy, embeds, seeds_i, sampler=spec)
            out.append(traj.images)
    return torch.cat(out)
