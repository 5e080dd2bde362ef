"""The policy update of one epoch: PPO-clipped DDPO steps on LoRA + ACE, optionally KL-regularised.

DDPO with importance sampling and clipping (Black et al. 2024, Alg. 1 / Eq. 4) on the CXRL policy
(Han et al., MICCAI 2024, Eq. 2): for every image of a minibatch and every trained step of its
trajectory, the step's log-probability is recomputed under the current policy and the clipped
surrogate of :func:`cxrl.rl.loss.ppo_loss` is summed over the steps, divided by their number.

``train.timesteps_per_call`` > 1 sends several (image, step) pairs of a minibatch through the UNet
in one call (a larger batch): the loss of a call is the mean over its pairs, weighted by its number
of steps, so the gradient is the same sum as one step per call, and so are the statistics. This
pays where the device is under-used at the training batch (GPUs, several CPU threads).

``train.kl_coef`` > 0 adds DPOK's regulariser (Fan et al., NeurIPS 2023, Eq. 7): the KL divergence
of each step's Gaussian under the policy from the frozen anchor's, on the policy's own trajectory,
``|mu_theta - mu_anchor|^2 / (2 sigma_t^2)`` averaged over latent elements (the log-prob's scale).

With a stochastic window (``sampling.window``) only the window's steps are actions, so only they
are chosen for training (Flow-GRPO-Fast, MixGRPO); the trajectories then come from the training
sampler (``sampling.train_num_steps`` / ``train_guidance_scale``: fewer steps, CFG-free). With
``train.timestep_weighting: noise_level`` each step's term is weighted by its sigma_t over the mean
sigma of the trainable steps (TempFlow-GRPO). The norm of the loss's gradient at the UNet output is
recorded by trajectory step (``grad_eps/step_XX``): which steps carry the signal.

A non-finite gradient norm skips that optimiser step (logged, counted as ``skipped_steps``): a
poisoned reward or an overflow never reaches the adapters or a checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from cxrl.rl.config import CXRLConfig
from cxrl.rl.ddim import ddim_std, ddim_step_logprob
from cxrl.rl.loss import gaussian_kl, ppo_loss
from cxrl.rl.parallel import LOCAL, Group
from cxrl.rl.policy import Policy
from cxrl.rl.sampler import Trajectory

log = logging.getLogger(__name__)


class PPOUpdate:
    """Owns the optimiser and the training RNG; :meth:`__call__` trains on one epoch's samples."""

    def __init__(self, cfg: CXRLConfig, policy: Policy):
        params = policy.trainable_parameters()
        if not params:
            raise ValueError("nothing to train: enable LoRA (lora.rank > 0) or ACE")
        t = cfg.train
        self.cfg, self.policy = cfg, policy
        self.optimizer = torch.optim.AdamW(
            params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, eps=t.adam_eps
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)  # shuffles and step choice
        self.global_step = 0
        self.skipped_steps = 0
        self.comm_s = 0.0  # seconds spent summing gradients and statistics across workers
        self._weights: torch.Tensor | None = None  # [T] per-step loss weights of the epoch (or None)
        self._grad_eps: dict[int, list[float]] = {}  # trajectory step -> [sum of norms, count]

    def __call__(
        self,
        traj: Trajectory,
        advantages: torch.Tensor,  # [B_local]
        owned: Sequence[int] | None = None,
        group: Group = LOCAL,
    ) -> dict[str, float]:
        """PPO-clipped updates on one epoch's samples. Returns the means of loss, KL, clipfrac.

        ``owned`` are the epoch-wide indices of this worker's images (None: all of them, one
        process). Shuffles and step choices are drawn over the whole epoch, the same on every
        worker, so any number of workers trains on the same minibatches.
        """
        t, dev = self.cfg.train, self.policy.device
        n_local = traj.log_probs.shape[0]
        trainable = traj.trainable_steps  # [S] the trajectory's actions (all steps without a window)
        steps = len(trainable)
        owned = list(range(n_local)) if owned is None else list(owned)
        b = int(group.sum_(np.array([len(owned)]))[0])  # images in the epoch, all workers
        pos = {g: i for i, g in enumerate(owned)}
        k_steps = self.cfg.train_timesteps
        per_call = min(t.timesteps_per_call, k_steps)
        keys = ["loss", "approx_kl", "clipfrac"] + (["kl"] if t.kl_coef > 0 else [])
        sums = dict.fromkeys(keys, 0.0)
        weights = dict.fromkeys(keys, 0.0)
        norms: list[float] = []
        adv = advantages.to(dev)
        scheduler = self.policy.pipe.scheduler
        scheduler.set_timesteps(self.cfg.sampling.train_steps, device=dev)
        self._weights = None
        if t.timestep_weighting == "noise_level":
            sigma = ddim_std(scheduler, traj.timesteps, self.cfg.sampling.eta)  # [T]
            self._weights = (sigma / sigma[trainable].mean()).float()
        self._grad_eps: dict[int, list[float]] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(t.inner_epochs):
            order = torch.randperm(b, generator=self.generator)  # [B] epoch-wide
            chosen = torch.stack([torch.randperm(steps, generator=self.generator) for _ in range(b)])
            chosen = trainable[chosen[:, :k_steps]]  # [B, K] the trajectory steps each image trains on
            for n, start in enumerate(range(0, b, t.batch_size), start=1):
                mb = order[start : start + t.batch_size].tolist()  # epoch-wide indices
                mine = [g for g in mb if g in pos]
                if mine:
                    idx = torch.tensor([pos[g] for g in mine])  # [b'] local rows
                    share = len(mine) / len(mb)  # this worker's part of the minibatch mean
                    for k0 in range(0, k_steps, per_call):
                        j = chosen[mine][:, k0 : k0 + per_call]  # [b', m]
                        out = self._call(traj, adv, idx, j, k_steps, share)
                        for key, value in out.items():
                            sums[key] += value * idx.numel() * j.shape[1]
                            weights[key] += idx.numel() * j.shape[1]
                if n % t.gradient_accumulation_steps == 0:
                    norms.append(self._optimizer_step(group))
        t0 = time.perf_counter()
        totals = group.sum_(np.array([sums[k] for k in keys] + [weights[k] for k in keys]))
        self.comm_s += time.perf_counter() - t0
        stats = {  # weighted means over every trained (image, step) pair; nan when none was trained
            k: float(totals[i] / totals[len(keys) + i]) if totals[len(keys) + i] else float("nan")
            for i, k in enumerate(keys)
        }
        stats["grad_norm"] = float(np.mean(norms)) if norms else float("nan")
        for j, (total, count) in sorted(self._grad_eps.items()):
            stats[f"grad_eps/step_{j:02d}"] = total / count
        stats["skipped_steps"] = float(self.skipped_steps)
        return stats

    def _call(
        self,
        traj: Trajectory,
        adv: torch.Tensor,  # [B_local]
        idx: torch.Tensor,  # [b'] local rows of the minibatch
        j: torch.Tensor,  # [b', m] trajectory step of each (image, slot)
        k_steps: int,
        share: float,
    ) -> dict[str, float]:
        """One UNet call over ``b' x m`` (image, step) pairs; backward of their part of the loss."""
        cfg, m = self.cfg, j.shape[1]
        dev = self.policy.device
        rows = idx.repeat(m)  # [b'*m] step-major: all images at slot 0, then slot 1, ...
        steps = j.T.reshape(-1)  # [b'*m]
        scheduler = self.policy.pipe.scheduler  # timesteps set by __call__
        ts_cpu = traj.timesteps[steps]  # [b'*m] on the CPU: the DDIM arithmetic needs no device sync
        ts = ts_cpu.to(dev)  # for the UNet
        x_t = traj.latents[rows, steps].to(dev)  # [b'*m, C, h, w]
        x_prev = traj.latents[rows, steps + 1].to(dev)
        embeds = traj.prompt_embeds[rows].to(dev)  # [b'*m, M, d]
        model_in = scheduler.scale_model_input(x_t, ts)
        g, eta = cfg.sampling.train_guidance, cfg.sampling.eta
        ref = None
        if cfg.train.kl_coef > 0:
            with torch.no_grad(), self.policy.anchor():
                eps_ref = self.policy.predict_noise(model_in, ts, embeds, g)
            ref = ddim_step_logprob(scheduler, eps_ref, ts_cpu, x_t, eta, prev_sample=x_prev)
        eps = self.policy.predict_noise(model_in, ts, embeds, g)
        if eps.requires_grad:
            eps.register_hook(lambda grad, steps=steps: self._record_grad(grad, steps))
        step = ddim_step_logprob(scheduler, eps, ts_cpu, x_t, eta, prev_sample=x_prev)
        old = traj.log_probs[rows, steps].to(dev)
        w = None if self._weights is None else self._weights[steps].to(dev)
        out = ppo_loss(step.log_prob, old, adv[rows], cfg.train.clip_range, cfg.train.adv_clip_max, w)
        loss = out.loss
        stats = {"loss": out.loss.item(), "approx_kl": out.approx_kl.item(), "clipfrac": out.clipfrac.item()}
        if ref is not None:
            kl = gaussian_kl(step.mean, ref.mean, step.std).mean()
            loss = loss + cfg.train.kl_coef * kl
            stats["kl"] = kl.item()
        (loss * share * m / (k_steps * cfg.train.gradient_accumulation_steps)).backward()
        return stats

    def _record_grad(self, grad: torch.Tensor, steps: torch.Tensor) -> None:
        """Per-row norms of d loss / d eps [b'*m], summed by trajectory step."""
        norms = grad.detach().flatten(1).norm(dim=1).cpu().tolist()
        for j, value in zip(steps.tolist(), norms, strict=True):
            acc = self._grad_eps.setdefault(j, [0.0, 0])
            acc[0] += value
            acc[1] += 1

    def _optimizer_step(self, group: Group) -> float:
        params = self.policy.trainable_parameters()
        t0 = time.perf_counter()
        group.sum_grads(params)
        self.comm_s += time.perf_counter() - t0
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm))
        if not math.isfinite(norm):
            self.skipped_steps += 1
            log.error(
                "gradient norm is %s: optimiser step %d skipped, adapters unchanged", norm, self.global_step
            )
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return norm
