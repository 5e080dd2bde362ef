"""One CXRL epoch as named steps: plan, sample, score, advantages, train, checkpoint.

The policy optimisation is DDPO with importance sampling and clipping (Black et al. 2024, Alg. 1 /
Eq. 4) applied to the CXRL policy (LoRA + ACE) with the RLCF reward (Han et al., MICCAI 2024, Eq. 2):

1. ``plan``: the epoch's reports and per-image seeds, a pure function of (run seed, epoch);
2. ``sample_batch``: policy trajectories (DDIM eta=1, latents + log-probs) and, when a comparative
   reward is on, anchor images from the same initial noise (looked up in ``anchor_cache`` first);
3. ``score``: one call to a :class:`~cxrl.rewards.types.RewardBackend` (in-process or gRPC);
4. ``advantages``: per-report normalisation (:class:`PerPromptStatTracker`);
5. ``train``: PPO-clipped loss over a random subset of each trajectory's steps, gradient
   accumulation, only LoRA and ACE parameters in the optimiser;
6. ``checkpoint``: atomic, resumable exactly.

Sampling and scoring are separate calls on sub-batches, so a driver may score sub-batch k while it
samples sub-batch k+1; :meth:`DDPOTrainer.run_epoch` runs them in sequence.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from cxrl.models.generator import Policy, load_pipeline
from cxrl.rewards.types import Components, RewardBackend, RewardResult
from cxrl.rl import checkpoint as ckpt
from cxrl.rl.config import CXRLConfig
from cxrl.rl.ddim import ddim_step_logprob
from cxrl.rl.loss import ppo_loss
from cxrl.rl.sampler import Trajectory, concat, sample
from cxrl.rl.stat_tracker import PerPromptStatTracker

log = logging.getLogger(__name__)
AnchorCache = MutableMapping[tuple[str, int], torch.Tensor]  # (report, seed) -> [1, H, W]


@dataclass
class Batch:
    prompts: list[str]  # [B]
    trajectory: Trajectory
    anchor_images: torch.Tensor | None  # [B, 1, H, W] or None (direct feedback)


def make_policy(cfg: CXRLConfig, pipe: StableDiffusionPipeline | None = None) -> Policy:
    """The policy a config describes, on ``pipe`` or on the pipeline ``cfg.generator`` names."""
    pipe = load_pipeline(cfg.generator, device=cfg.device) if pipe is None else pipe.to(cfg.device)
    return Policy(
        pipe,
        lora_rank=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        lora_targets=cfg.lora.targets,
        ace_tokens=cfg.ace.tokens if cfg.ace.enabled else 0,
        ace_init_std=cfg.ace.init_std,
        seed=cfg.seed,
    ).to(cfg.device)


class DDPOTrainer:
    """Drives CXRL epochs for a policy, a reward backend and a list of reports."""

    def __init__(
        self,
        cfg: CXRLConfig,
        policy: Policy,
        rewards: RewardBackend,
        prompts: Sequence[str],
        run_dir: str | Path | None = None,
        anchor_cache: AnchorCache | None = None,
    ):
        self.cfg = cfg
        self.policy = policy
        self.rewards = rewards
        self.prompts = self._usable(prompts)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.anchor_cache = anchor_cache
        params = policy.trainable_parameters()
        if not params:
            raise ValueError("nothing to train: enable LoRA (lora.rank > 0) or ACE")
        t = cfg.train
        self.optimizer = torch.optim.AdamW(
            params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, eps=t.adam_eps
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        s = cfg.stat_tracker
        self.tracker = PerPromptStatTracker(s.buffer_size, s.min_count)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.timings: dict[str, float] = defaultdict(float)
        log.info(
            "CXRL: %d reports, %d images/epoch (%d per report), %d DDIM steps (%d trained), "
            "%d optimiser steps/epoch, %d trainable parameters",
            len(self.prompts),
            cfg.sampling.images_per_epoch,
            cfg.sampling.images_per_prompt,
            cfg.sampling.num_steps,
            cfg.train_timesteps,
            cfg.optimizer_steps_per_epoch,
            sum(p.numel() for p in params),
        )

    def _usable(self, prompts: Sequence[str]) -> list[str]:
        tok = self.policy.pipe.tokenizer
        m = self.cfg.max_report_tokens
        kept = [p for p in prompts if p.strip() and len(tok(p, verbose=False).input_ids) - 2 <= m]
        if len(kept) < len(prompts):
            log.warning(
                "skipped %d of %d reports (empty or over M=%d tokens)",
                len(prompts) - len(kept),
                len(prompts),
                m,
            )
        if not kept:
            raise ValueError(f"no usable reports: all are empty or longer than max_report_tokens={m}")
        return kept

    # -- 1. plan -----------------------------------------------------------------------------------
    def plan(self, epoch: int) -> tuple[list[str], list[int]]:
        """Reports and seeds of an epoch: deterministic in (seed, epoch), independent of resumes."""
        s = self.cfg.sampling
        rng = np.random.default_rng([self.cfg.seed, epoch])
        n = s.images_per_epoch // s.images_per_prompt
        idx = rng.choice(len(self.prompts), size=n, replace=n > len(self.prompts))
        prompts = [self.prompts[i] for i in idx for _ in range(s.images_per_prompt)]
        seeds = rng.integers(0, 2**31 - 1, size=len(prompts)).tolist()
        return prompts, seeds

    def step_seeds(self, epoch: int, seeds: Sequence[int]) -> list[int] | None:
        """The policy's per-step noise seeds for an epoch's images (None: reuse ``seeds``, as the anchor).

        Fresh each epoch, deterministic in (seed, epoch); the anchor keeps the image seeds' own step
        noise, so policy and anchor share the initial latent only (see :mod:`cxrl.rl.sampler`).
        """
        if self.cfg.sampling.shared_step_noise:
            return None
        rng = np.random.default_rng([self.cfg.seed, epoch, 1])
        return rng.integers(0, 2**31 - 1, size=len(seeds)).tolist()

    # -- 2. sample ---------------------------------------------------------------------------------
    def sample_batch(
        self, prompts: list[str], seeds: list[int], step_seeds: list[int] | None = None
    ) -> Batch:
        """Policy trajectories and (when needed) anchor images for one sub-batch.

        ``seeds`` fix the initial latents (shared with the anchor); ``step_seeds`` the policy's
        per-step noise (None: the seeds' own, as the anchor's).
        """
        s = self.cfg.sampling
        t0 = time.perf_counter()
        embeds = self.policy.encode_prompts(prompts)  # [B, M, d]
        traj = sample(self.policy, embeds, seeds, s.num_steps, s.guidance_scale, s.eta, step_seeds=step_seeds)
        t1 = time.perf_counter()
        anchor = self._anchor_images(prompts, seeds, embeds) if self.cfg.rewards.needs_anchor else None
        self.timings["sample_policy"] += t1 - t0
        self.timings["sample_anchor"] += time.perf_counter() - t1
        return Batch(prompts=list(prompts), trajectory=traj, anchor_images=anchor)

    def _anchor_images(self, prompts: list[str], seeds: list[int], embeds: torch.Tensor) -> torch.Tensor:
        cache = self.anchor_cache if self.anchor_cache is not None else {}
        keys = list(zip(prompts, seeds, strict=True))
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            s = self.cfg.sampling
            with self.policy.anchor():
                traj = sample(
                    self.policy,
                    embeds[missing],
                    [seeds[i] for i in missing],
                    s.num_steps,
                    s.guidance_scale,
                    s.eta,
                )
            fresh = dict(zip(missing, traj.images, strict=True))
            if self.anchor_cache is not None:
                for i, img in fresh.items():
                    self.anchor_cache[keys[i]] = img
            return torch.stack([fresh[i] if i in fresh else cache[keys[i]] for i in range(len(keys))])
        return torch.stack([cache[k] for k in keys])

    def sample(self, epoch: int) -> list[Batch]:
        prompts, seeds = self.plan(epoch)
        steps = self.step_seeds(epoch, seeds)
        bs = self.cfg.sampling.batch_size
        return [
            self.sample_batch(
                prompts[i : i + bs], seeds[i : i + bs], None if steps is None else steps[i : i + bs]
            )
            for i in range(0, len(prompts), bs)
        ]

    # -- 3. score ----------------------------------------------------------------------------------
    def score(self, batch: Batch) -> RewardResult:
        t0 = time.perf_counter()
        result = self.rewards.score(batch.trajectory.images, batch.prompts, batch.anchor_images)
        self.timings["score"] += time.perf_counter() - t0
        if result.total.shape != (len(batch.prompts),):
            raise ValueError(
                f"reward backend returned totals of shape {list(result.total.shape)} for {len(batch.prompts)} images"
            )
        return result

    # -- 4. advantages -----------------------------------------------------------------------------
    def advantages(self, prompts: list[str], totals: torch.Tensor) -> torch.Tensor:
        """Rewards [B] -> advantages [B], normalised per report (or over the batch)."""
        rewards = totals.detach().cpu().double().numpy()
        if self.cfg.stat_tracker.per_prompt:
            return torch.from_numpy(self.tracker.update(prompts, rewards))
        return torch.from_numpy(((rewards - rewards.mean()) / (rewards.std() + 1e-6)).astype(np.float32))

    # -- 5. train ----------------------------------------------------------------------------------
    def train(self, traj: Trajectory, advantages: torch.Tensor) -> dict[str, float]:
        """PPO-clipped updates of LoRA + ACE on one sampled batch. Returns mean loss/KL/clipfrac."""
        cfg, t = self.cfg, self.cfg.train
        t0 = time.perf_counter()
        scheduler = self.policy.pipe.scheduler
        scheduler.set_timesteps(cfg.sampling.num_steps, device=self.policy.device)
        b, steps = traj.log_probs.shape
        k_steps = cfg.train_timesteps
        dev = self.policy.device
        adv = advantages.to(dev)
        stats: dict[str, list[float]] = defaultdict(list)
        self.optimizer.zero_grad(set_to_none=True)
        for _ in range(t.inner_epochs):
            order = torch.randperm(b, generator=self.generator)  # [B]
            chosen = torch.stack([torch.randperm(steps, generator=self.generator) for _ in range(b)])[
                :, :k_steps
            ]
            for n, start in enumerate(range(0, b, t.batch_size), start=1):
                idx = order[start : start + t.batch_size]  # [b']
                embeds = traj.prompt_embeds[idx].to(dev)  # [b', M, d]
                for k in range(k_steps):
                    j = chosen[idx, k]  # [b'] step index of each image
                    ts = traj.timesteps[j].to(dev)  # [b']
                    x_t = traj.latents[idx, j].to(dev)  # [b', C, h, w]
                    x_prev = traj.latents[idx, j + 1].to(dev)
                    eps = self.policy.predict_noise(
                        scheduler.scale_model_input(x_t, ts), ts, embeds, cfg.sampling.guidance_scale
                    )
                    step = ddim_step_logprob(scheduler, eps, ts, x_t, cfg.sampling.eta, prev_sample=x_prev)
                    out = ppo_loss(
                        step.log_prob, traj.log_probs[idx, j].to(dev), adv[idx], t.clip_range, t.adv_clip_max
                    )
                    (out.loss / (k_steps * t.gradient_accumulation_steps)).backward()
                    stats["loss"].append(out.loss.item())
                    stats["approx_kl"].append(out.approx_kl.item())
                    stats["clipfrac"].append(out.clipfrac.item())
                if n % t.gradient_accumulation_steps == 0:
                    stats["grad_norm"].append(self._optimizer_step())
        self.timings["train"] += time.perf_counter() - t0
        return {key: float(np.mean(v)) for key, v in stats.items()}

    def _optimizer_step(self) -> float:
        params = self.policy.trainable_parameters()
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return float(norm)

    # -- 6. checkpoint -----------------------------------------------------------------------------
    def checkpoint(self) -> Path:
        if self.run_dir is None:
            raise ValueError("no run_dir given; cannot write checkpoints")
        t0 = time.perf_counter()
        path = ckpt.save_checkpoint(
            self.run_dir / "checkpoints",
            self.epoch,
            self.policy,
            self.optimizer,
            self.generator,
            self.tracker.state_dict(),
            {
                "global_step": self.global_step,
                "history": self.history,
                "config": self.cfg.model_dump(mode="json"),
            },
        )
        self.timings["checkpoint"] += time.perf_counter() - t0
        return path

    def resume(self, directory: str | Path | None = None) -> bool:
        """Restore from ``directory`` or the run's latest checkpoint. False when there is none."""
        if directory is None:
            if self.run_dir is None:
                return False
            directory = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
            if directory is None:
                return False
        state, tracker = ckpt.load_checkpoint(directory, self.policy, self.optimizer, self.generator)
        self.tracker.load_state_dict(tracker)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        log.info("resumed from %s at epoch %d", directory, self.epoch)
        return True

    # -- the epoch ---------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, Any]:
        """sample -> score -> advantages -> train -> checkpoint; returns the epoch's metrics."""
        batches = self.sample(self.epoch)
        results = [self.score(b) for b in batches]
        prompts = [p for b in batches for p in b.prompts]
        totals = torch.cat([r.total.detach().cpu().float() for r in results])  # [B]
        advantages = self.advantages(prompts, totals)
        traj = concat([b.trajectory for b in batches])
        metrics: dict[str, Any] = {"epoch": self.epoch, **self.train(traj, advantages)}
        metrics.update(reward_metrics(totals, results))
        metrics["global_step"] = self.global_step
        self.history.append(metrics)
        self.epoch += 1
        if self.run_dir is not None and self.epoch % self.cfg.checkpoint_every == 0:
            self.checkpoint()
        log.info(
            "epoch %d: %s",
            metrics["epoch"],
            {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)},
        )
        return metrics

    def run(self, epochs: int | None = None) -> list[dict[str, Any]]:
        """Run until ``epochs`` (default cfg.epochs) epochs are done in total."""
        target = self.cfg.epochs if epochs is None else epochs
        while self.epoch < target:
            self.run_epoch()
        return self.history


def reward_metrics(totals: torch.Tensor, results: list[RewardResult]) -> dict[str, float]:
    """Means of the total and of every component computed, for policy and anchor."""
    out = {"reward_mean": float(totals.mean()), "reward_std": float(totals.std(unbiased=False))}
    for side in ("policy", "anchor"):
        comps: list[Components] = [getattr(r, side) for r in results if getattr(r, side) is not None]
        for name in ("r_align", "diag_acc", "consistency"):
            values = [getattr(c, name) for c in comps if getattr(c, name) is not None]
            if values and len(values) == len(results):
                out[f"{side}_{name}"] = float(torch.cat([v.detach().cpu().float() for v in values]).mean())
    return out
