"""THE CXRL epoch engine: plan, sample, score, advantages, train, checkpoint.

One engine drives every CXRL run (`cxrl train`, `cxrl demo`, `cxrl reproduce`, the benchmarks).
The policy optimisation is DDPO (Black et al. 2024, Alg. 1) on the CXRL policy (LoRA + ACE) with
the RLCF reward (Han et al., MICCAI 2024, Eq. 2). An epoch is a handful of named steps:

1. **plan** (:mod:`cxrl.rl.plan`): the epoch's reports and noise seeds, a pure function of the
   run seed and the epoch (fresh noise, or a fixed seed bank per report so anchors recur);
2. **sample**: policy trajectories (DDIM eta=1, latents + log-probs) in sub-batches; anchors from
   the same initial noise for the (report, seed) pairs the anchor store lacks;
3. **score** (:mod:`cxrl.rl.rlcf`): each sub-batch's reward call runs in a bounded thread pool
   while the next sub-batch samples (at most ``max_in_flight`` outstanding), retried on transient
   errors; the RLCF total is formed here from the per-image components;
4. **advantages**: per-report normalisation over the whole epoch (all workers' rewards);
5. **train** (:mod:`cxrl.rl.update`): PPO-clipped steps on LoRA + ACE, optionally timestep-batched
   and KL-regularised;
6. **checkpoint**: atomic, exactly resumable; then the epoch's metrics go to the sinks
   (:mod:`cxrl.rl.sinks`).

The variable parts are small pluggable pieces: the plan, the anchor store (in memory, or Redis in
the trainer service), the reward backend (in-process scorers or the gRPC gateway, one protocol),
the sinks, and the data-parallel group (:mod:`cxrl.rl.parallel`).

Images whose reward is not finite are dropped from the epoch's update with a logged error, so a
poisoned reward never reaches the adapters.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrl.rewards.types import REWARDS, RewardBackend, RewardResult
from cxrl.rl import checkpoint as ckpt
from cxrl.rl.anchor_ahead import AnchorAhead
from cxrl.rl.anchor_store import AnchorStore
from cxrl.rl.config import CXRLConfig
from cxrl.rl.parallel import LOCAL, Group
from cxrl.rl.plan import EpochPlan, Plan
from cxrl.rl.policy import Policy
from cxrl.rl.rlcf import RewardSpec, SampledChunk, anchor_total, score_chunk
from cxrl.rl.sampler import Sampler, concat, sample
from cxrl.rl.sinks import PHASES, Sink
from cxrl.rl.stat_tracker import PerPromptStatTracker
from cxrl.rl.update import PPOUpdate

log = logging.getLogger(__name__)
SIDES = ("policy", "anchor")
PER_IMAGE = tuple(r.component for r in REWARDS)  # policy/<c>, anchor/<c> metrics: the rewards' name table


class Engine:
    """Runs CXRL epochs for a policy, a reward backend and an epoch plan."""

    def __init__(
        self,
        *,
        cfg: CXRLConfig,
        policy: Policy,
        backend: RewardBackend,
        plan: Plan,
        run_dir: str | Path | None = None,
        anchors: AnchorStore | None = None,
        sinks: Sequence[Sink] = (),
        max_in_flight: int = 2,
        retries: int = 0,
        backoff_s: float = 1.0,
        group: Group = LOCAL,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not plan.prompts:
            raise ValueError("no usable reports to train on: all are empty or longer than M tokens")
        self.cfg, self.policy, self.backend, self.plan = cfg, policy, backend, plan
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.anchors, self.sinks, self.group = anchors, list(sinks), group  # anchors: the anchor store
        r = cfg.rewards
        self.spec = RewardSpec(dict(r.weights), r.rlcf, r.needs_anchor, retries, backoff_s)
        self.update = PPOUpdate(cfg, policy)
        s = cfg.stat_tracker
        self.tracker = PerPromptStatTracker(s.buffer_size, s.min_count)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.ahead: AnchorAhead | None = None  # set by the caller to sample anchors ahead
        self.sampler = Sampler.training(cfg.sampling, 0)  # this epoch's training sampler
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="reward")
        self.max_in_flight = max_in_flight
        log.info(
            "CXRL engine: %d reports, %d images/epoch (%d per report%s) on %d worker(s), %d DDIM steps "
            "(%s, %d trained, %d per UNet call, guidance %g), %d optimiser steps/epoch",
            len(plan.prompts),
            cfg.sampling.images_per_epoch,
            cfg.sampling.images_per_prompt,
            ", branched" if cfg.sampling.branch else "",
            group.world,
            cfg.sampling.train_steps,
            f"window of {cfg.sampling.window}" if cfg.sampling.window else "all stochastic",
            cfg.train_timesteps,
            cfg.train.timesteps_per_call,
            cfg.sampling.train_guidance,
            cfg.optimizer_steps_per_epoch,
        )

    @property
    def global_step(self) -> int:
        return self.update.global_step

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.update.optimizer

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.stop(timeout=10.0)  # after Ctrl-C, do not wait for a half-done batch
        self._pool.shutdown(wait=True, cancel_futures=True)
        for sink in self.sinks:
            sink.close()

    # -- 2. sample ---------------------------------------------------------------------------------
    def sample_chunk(self, part: EpochPlan, timings: dict[str, float]) -> SampledChunk:
        """Policy trajectories; anchors only for the (report, seed) pairs the anchor store does not hold."""
        s = self.cfg.sampling
        t0 = time.perf_counter()
        embeds = self.policy.encode_prompts(part.prompts)  # [B, M, d]
        pairs = list(zip(part.prompts, part.seeds, strict=True))
        ids = {pair: n for n, pair in enumerate(dict.fromkeys(pairs))}
        traj = sample(
            self.policy,
            embeds,
            part.seeds,
            step_seeds=part.step_seeds,
            sampler=self.sampler,
            groups=[ids[p] for p in pairs] if s.branch else None,
        )
        t1 = time.perf_counter()
        timings["sample"] += t1 - t0
        chunk = SampledChunk(prompts=list(part.prompts), seeds=list(part.seeds), trajectory=traj)
        if not self.spec.needs_anchor:
            return chunk
        n = len(part)
        chunk.cached = self.anchors.get_many(part.prompts, part.seeds) if self.anchors else [None] * n
        chunk.missing = [i for i, e in enumerate(chunk.cached) if e is None]
        if chunk.missing:
            # one anchor per (report, seed): a branched group shares it
            first = {pairs[i]: i for i in reversed(chunk.missing)}
            rows = list(dict.fromkeys(first[pairs[i]] for i in chunk.missing))
            with self.policy.anchor():
                anchor = sample(
                    self.policy, embeds[rows], [part.seeds[i] for i in rows], sampler=Sampler.anchor(s)
                )
            where = {pairs[i]: n for n, i in enumerate(rows)}
            chunk.fresh_anchor = anchor.images[[where[pairs[i]] for i in chunk.missing]]  # [m, 1, H, W]
        timings["anchor"] += time.perf_counter() - t1
        return chunk

    # -- 3. score (overlapped with the next sub-batch's sampling) -----------------------------------
    def _score(self, chunk: SampledChunk) -> tuple[RewardResult, int, float]:
        t0 = time.perf_counter()
        result, used = score_chunk(self.backend, chunk, self.spec, self.anchors)
        if result.total.shape != (len(chunk.prompts),):
            raise ValueError(
                f"reward backend returned totals of shape {list(result.total.shape)} for {len(chunk.prompts)} images"
            )
        return result, used, time.perf_counter() - t0

    def sample_and_score(
        self, share: EpochPlan, timings: dict[str, float]
    ) -> tuple[list[SampledChunk], list[RewardResult], int]:
        """Sample this worker's share sub-batch by sub-batch, scoring each while the next samples."""
        bs = self.cfg.sampling.batch_size
        chunks: list[SampledChunk] = []
        results: list[RewardResult] = []
        retries = 0
        pending: deque[Future] = deque()

        def collect(fut: Future) -> None:
            nonlocal retries
            t0 = time.perf_counter()
            res, used, secs = fut.result()
            timings["score_wait"] += time.perf_counter() - t0
            timings["score"] += secs
            results.append(res)
            retries += used

        try:
            for start in range(0, len(share), bs):
                chunk = self.sample_chunk(share.take(range(start, min(start + bs, len(share)))), timings)
                chunks.append(chunk)
                while len(pending) >= self.max_in_flight:
                    collect(pending.popleft())
                pending.append(self._pool.submit(self._score, chunk))
            while pending:
                collect(pending.popleft())
        finally:
            for fut in pending:
                fut.cancel()
        return chunks, results, retries

    # -- 4. advantages -----------------------------------------------------------------------------
    def advantages(self, prompts: list[str], totals: np.ndarray) -> np.ndarray:
        """Rewards [N] -> advantages [N], normalised per report (or over the epoch's batch)."""
        rewards = np.asarray(totals, dtype=np.float64)
        if self.cfg.stat_tracker.per_prompt:
            return self.tracker.update(prompts, rewards)
        return ((rewards - rewards.mean()) / (rewards.std() + 1e-6)).astype(np.float32)

    # -- the epoch ---------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, Any]:
        """plan -> sample -> score -> advantages -> train -> checkpoint; returns the epoch's metrics."""
        epoch, g = self.epoch, self.group
        start, comm0 = time.perf_counter(), self.update.comm_s
        timings = dict.fromkeys(PHASES, 0.0)
        hits0, misses0 = (self.anchors.hits, self.anchors.misses) if self.anchors else (0, 0)
        if self.ahead is not None:
            self.ahead.current = epoch
        plan = self.plan(epoch)
        self.sampler = Sampler.training(self.cfg.sampling, epoch)
        owned = g.share(len(plan))
        chunks, results, retries = self.sample_and_score(plan.take(owned), timings)
        t0 = time.perf_counter()
        local = per_image(results, self.spec)
        images = gather_images(g.gather((owned, local)), len(plan))  # epoch order, all workers
        timings["comm"] += time.perf_counter() - t0
        keep = np.isfinite(images["total"])
        if not keep.all():
            log.error(
                "epoch %d: %d of %d rewards are not finite (a reward model or the anchor store answered "
                "NaN/inf); those images are left out of the update",
                epoch,
                int((~keep).sum()),
                len(keep),
            )
        adv = np.zeros(len(plan), dtype=np.float32)
        if keep.any():
            adv[keep] = self.advantages(
                [plan.prompts[i] for i in np.flatnonzero(keep)], images["total"][keep]
            )
        mine = [i for i, gi in enumerate(owned) if keep[gi]]
        traj = concat([c.trajectory for c in chunks])
        if len(mine) < len(traj):
            traj = traj.take(mine)
        stats = self.update(
            traj, torch.from_numpy(adv[[owned[i] for i in mine]]), [owned[i] for i in mine], g
        )
        timings["comm"] += self.update.comm_s - comm0
        timings["train"] += time.perf_counter() - t0 - timings["comm"]
        metrics = self._metrics(epoch, images, keep, stats, timings, retries, hits0, misses0)
        metrics.update(group_diagnostics(plan, images["total"], keep))
        metrics["time/epoch"] = time.perf_counter() - start
        self.history.append(dict(metrics))  # as checkpointed (time/checkpoint is known only after)
        self.epoch += 1
        if self.run_dir is not None and (
            self.epoch % self.cfg.checkpoint_every == 0 or self.epoch >= self.cfg.epochs
        ):
            t0 = time.perf_counter()
            self.checkpoint()
            metrics["time/checkpoint"] = time.perf_counter() - t0
        if g.rank == 0:
            for sink in self.sinks:
                sink.epoch(metrics)
        return metrics

    def _metrics(
        self,
        epoch: int,
        images: dict[str, np.ndarray],
        keep: np.ndarray,
        stats: dict[str, float],
        timings: dict[str, float],
        retries: int,
        hits0: int,
        misses0: int,
    ) -> dict[str, Any]:
        m: dict[str, Any] = {"epoch": epoch, "global_step": self.global_step}
        total = images["total"][keep]
        m["policy/total"] = float(total.mean()) if total.size else float("nan")
        m["reward_std"] = float(total.std()) if total.size else float("nan")
        for key, values in images.items():
            if key != "total" and np.isfinite(values).all():
                m[key] = float(values.mean())
        m["dropped_images"] = int((~keep).sum())
        for key in ("loss", "approx_kl", "clipfrac", "kl", "grad_norm", "skipped_steps"):
            m[key] = stats.get(key, 0.0 if key == "kl" else float("nan"))
        m.update({k: v for k, v in stats.items() if k.startswith("grad_eps/")})
        if self.anchors is not None:
            counts = self.group.sum_(np.array([self.anchors.hits - hits0, self.anchors.misses - misses0]))
            m["cache_hit_rate"] = float(counts[0] / counts.sum()) if counts.sum() else 0.0
        m["reward_retries"] = int(self.group.sum_(np.array([retries]))[0])
        for phase, secs in timings.items():
            m[f"time/{phase}"] = secs
        return m

    def run(self, epochs: int | None = None) -> list[dict[str, Any]]:
        """Run (or continue) until ``epochs`` (default cfg.epochs) epochs are done in total."""
        target = self.cfg.epochs if epochs is None else epochs
        if self.ahead is not None:
            self.ahead.start(self.epoch + 1, target)
        while self.epoch < target:
            self.run_epoch()
        return self.history

    # -- 6. checkpoint -----------------------------------------------------------------------------
    def checkpoint(self) -> Path | None:
        """Write the checkpoint of the epochs done (rank 0; the other workers wait for it)."""
        if self.run_dir is None:
            raise ValueError("no run_dir given; cannot write checkpoints")
        path = None
        if self.group.rank == 0:
            path = ckpt.save_checkpoint(
                self.run_dir / "checkpoints",
                self.epoch,
                self.policy,
                self.update.optimizer,
                self.update.generator,
                self.tracker.state_dict(),
                {
                    "global_step": self.global_step,
                    "skipped_steps": self.update.skipped_steps,
                    "history": self.history,
                    "config": self.cfg.model_dump(mode="json"),
                },
            )
        self.group.barrier()
        return path

    def resume(self, directory: str | Path | None = None) -> bool:
        """Restore from ``directory`` or the run's latest checkpoint. False when there is none."""
        if directory is None:
            if self.run_dir is None:
                return False
            ckpt.remove_partial(self.run_dir / "checkpoints") if self.group.rank == 0 else None
            directory = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
            if directory is None:
                return False
        state, tracker = ckpt.load_checkpoint(
            directory, self.policy, self.update.optimizer, self.update.generator
        )
        self.tracker.load_state_dict(tracker)
        self.epoch = int(state["epoch"])
        self.update.global_step = int(state["global_step"])
        self.update.skipped_steps = int(state.get("skipped_steps", 0))
        self.history = list(state["history"])
        log.info("resumed from %s at epoch %d", directory, self.epoch)
        return True


def group_diagnostics(plan: EpochPlan, totals: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """The advantage normalisation's groups (a report's images in the epoch): their mean size and the
    share whose finite rewards have no spread (no learning signal under per-report normalisation)."""
    groups: dict[str, list[float]] = {}
    for report, total, ok in zip(plan.prompts, totals, keep, strict=True):
        if ok:
            groups.setdefault(report, []).append(float(total))
    flat = [np.ptp(v) <= 1e-9 * max(1.0, float(np.abs(v).max())) for v in groups.values()]
    return {
        "group_size": float(np.mean([len(v) for v in groups.values()])) if groups else float("nan"),
        "zero_spread_groups": float(np.mean(flat)) if flat else float("nan"),
    }


def per_image(results: list[RewardResult], spec: RewardSpec) -> dict[str, np.ndarray]:
    """Each image's total and components (policy and anchor side) of a worker's sub-batches."""
    out = {"total": np.concatenate([r.total.detach().cpu().double().numpy() for r in results])}
    for side in SIDES:
        comps = [getattr(r, side) for r in results]
        if any(c is None for c in comps):
            continue
        for name in PER_IMAGE:
            values = [getattr(c, name) for c in comps]
            if all(v is not None for v in values):
                out[f"{side}/{name}"] = torch.cat([v.detach().cpu().double() for v in values]).numpy()
        if side == "anchor":
            totals = [anchor_total(c, spec.weights, spec.rlcf) for c in comps]
            out["anchor/total"] = torch.cat([t.detach().cpu().double() for t in totals]).numpy()
    return out


def gather_images(parts: list[tuple[list[int], dict[str, np.ndarray]]], n: int) -> dict[str, np.ndarray]:
    """Workers' (indices, per-image values) -> one array per value in epoch order [n]."""
    keys = set.intersection(*(set(values) for _, values in parts))
    out = {k: np.full(n, np.nan) for k in keys}
    for index, values in parts:
        for k in keys:
            out[k][index] = values[k]
    return out
