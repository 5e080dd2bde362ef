"""The CXRL epoch loop of the trainer service: sample, score (overlapped), advantages, train, checkpoint.

Built on the separable DDPO steps of :class:`cxrl.rl.ddpo.DDPOTrainer` (Black et al. 2024, with the
CXRL policy and RLCF reward of Han et al., MICCAI 2024). What the service adds:

- reward calls for sub-batch k run in a bounded thread pool while sub-batch k+1 samples (at most
  ``max_in_flight`` calls outstanding), with deadlines and bounded retries;
- each report draws its noise seeds from a fixed bank, so a frozen anchor's image and components
  for (report, seed) recur and are served by the Redis anchor cache;
- per-epoch metrics (policy and anchor mean of each component, totals, KL, clip fraction, cache hit
  rate, time per phase) go to one log line, to ``history.jsonl`` and to the Redis metrics stream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cxrl.models.generator import Policy
from cxrl.rewards.types import Components, RewardBackend, RewardResult, combine
from cxrl.rl.config import CXRLConfig
from cxrl.rl.ddpo import DDPOTrainer
from cxrl.rl.sampler import concat, sample
from trainer.anchor_cache import AnchorCache
from trainer.scoring import SampledChunk, direct_total, score_chunk
from trainer.store import RunStore

log = logging.getLogger(__name__)
PHASES = ("sample", "anchor", "score", "score_wait", "train", "checkpoint")


def bank_seed(run_seed: int, report: str, slot: int) -> int:
    """Seed ``slot`` of a report's fixed noise bank (stable across runs with the same run seed)."""
    digest = hashlib.sha256(f"{run_seed}\0{slot}\0{report}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class TrainLoop:
    """Runs CXRL epochs for a policy, a reward backend and training reports."""

    def __init__(
        self,
        cfg: CXRLConfig,
        policy: Policy,
        backend: RewardBackend,
        prompts: Sequence[str],
        run_dir: str | Path,
        run_id: str,
        seed_bank: int = 4,
        cache: AnchorCache | None = None,
        store: RunStore | None = None,
        max_in_flight: int = 2,
        retries: int = 0,
        backoff_s: float = 1.0,
        progress: bool = True,
    ):
        if seed_bank < 1 or max_in_flight < 1:
            raise ValueError(f"seed_bank ({seed_bank}) and max_in_flight ({max_in_flight}) must be >= 1")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.ddpo = DDPOTrainer(cfg, policy, backend, prompts, run_dir=self.run_dir)
        self.policy, self.backend = policy, backend
        self.seed_bank = seed_bank
        self.cache, self.store = cache, store
        self.max_in_flight = max_in_flight
        self.retries, self.backoff_s = retries, backoff_s
        self.progress = progress
        self.needs_anchor = cfg.rewards.needs_anchor
        self.weights = dict(cfg.rewards.weights)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="reward")

    @property
    def epoch(self) -> int:
        return self.ddpo.epoch

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.ddpo.history

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- plan ----------------------------------------------------------------------------------------
    def plan(self, epoch: int) -> tuple[list[str], list[int]]:
        """The epoch's reports and seeds; each report's seeds come from its bank of ``seed_bank``."""
        s = self.cfg.sampling
        rng = np.random.default_rng([self.cfg.seed, epoch])
        prompts = self.ddpo.prompts
        n = s.images_per_epoch // s.images_per_prompt
        idx = rng.choice(len(prompts), size=n, replace=n > len(prompts))
        out_p, out_s = [], []
        for i in idx:
            slots = rng.choice(
                self.seed_bank, size=s.images_per_prompt, replace=s.images_per_prompt > self.seed_bank
            )
            for slot in slots:
                out_p.append(prompts[i])
                out_s.append(bank_seed(self.cfg.seed, prompts[i], int(slot)))
        return out_p, out_s

    # -- sample --------------------------------------------------------------------------------------
    def sample_chunk(
        self,
        prompts: list[str],
        seeds: list[int],
        timings: dict[str, float],
        step_seeds: list[int] | None = None,
    ) -> SampledChunk:
        """Policy trajectories; anchors only for (report, seed) pairs the cache does not hold.

        Policy and anchor share the initial latent of ``seeds``; the policy's per-step noise comes
        from ``step_seeds`` (None: the seeds' own, as the anchor's).
        """
        s = self.cfg.sampling
        t0 = time.perf_counter()
        embeds = self.policy.encode_prompts(prompts)  # [B, M, d]
        traj = sample(self.policy, embeds, seeds, s.num_steps, s.guidance_scale, s.eta, step_seeds=step_seeds)
        t1 = time.perf_counter()
        timings["sample"] += t1 - t0
        chunk = SampledChunk(prompts=list(prompts), seeds=list(seeds), trajectory=traj)
        if not self.needs_anchor:
            return chunk
        chunk.cached = self.cache.get_many(prompts, seeds) if self.cache else [None] * len(prompts)
        chunk.missing = [i for i, e in enumerate(chunk.cached) if e is None]
        if chunk.missing:
            with self.policy.anchor():
                anchor = sample(
                    self.policy, embeds[chunk.missing], [seeds[i] for i in chunk.missing],
                    s.num_steps, s.guidance_scale, s.eta,
                )  # fmt: skip
            chunk.fresh_anchor = anchor.images  # [m, 1, H, W]
        timings["anchor"] += time.perf_counter() - t1
        return chunk

    def _score(self, chunk: SampledChunk) -> tuple[RewardResult, int, float]:
        t0 = time.perf_counter()
        result, used = score_chunk(
            self.backend, chunk, self.weights, self.cfg.rewards.rlcf, self.needs_anchor,
            self.cache, self.retries, self.backoff_s,
        )  # fmt: skip
        return result, used, time.perf_counter() - t0

    # -- the epoch -----------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, Any]:
        epoch = self.ddpo.epoch
        timings = dict.fromkeys(PHASES, 0.0)
        hits0, misses0 = (self.cache.hits, self.cache.misses) if self.cache else (0, 0)
        prompts, seeds = self.plan(epoch)
        steps = self.ddpo.step_seeds(epoch, seeds)
        bs = self.cfg.sampling.batch_size
        starts = list(range(0, len(prompts), bs))
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

        bar = tqdm(starts, desc=f"epoch {epoch} sample", unit="batch", leave=False, disable=not self.progress)
        try:
            for start in bar:
                chunk = self.sample_chunk(
                    prompts[start : start + bs],
                    seeds[start : start + bs],
                    timings,
                    None if steps is None else steps[start : start + bs],
                )
                chunks.append(chunk)
                while len(pending) >= self.max_in_flight:
                    collect(pending.popleft())
                pending.append(self._pool.submit(self._score, chunk))
            while pending:
                collect(pending.popleft())
        finally:
            bar.close()
            for fut in pending:
                fut.cancel()
        totals = torch.cat([r.total.detach().cpu().float() for r in results])  # [N]
        t0 = time.perf_counter()
        advantages = self.ddpo.advantages(prompts, totals)  # [N]
        train_stats = self.ddpo.train(concat([c.trajectory for c in chunks]), advantages)
        timings["train"] += time.perf_counter() - t0
        metrics = self._metrics(epoch, results, train_stats, timings, retries, hits0, misses0)
        self.ddpo.history.append(dict(metrics))  # as checkpointed (time/checkpoint is known only after)
        self.ddpo.epoch += 1
        if self.ddpo.epoch % self.cfg.checkpoint_every == 0 or self.ddpo.epoch >= self.cfg.epochs:
            t0 = time.perf_counter()
            self.ddpo.checkpoint()
            metrics["time/checkpoint"] = time.perf_counter() - t0
        self._record(metrics)
        return metrics

    def _metrics(
        self,
        epoch: int,
        results: list[RewardResult],
        train_stats: dict[str, float],
        timings: dict[str, float],
        retries: int,
        hits0: int,
        misses0: int,
    ) -> dict[str, Any]:
        """The epoch's metrics; cache hits/misses are counted from the totals at the epoch's start."""
        m: dict[str, Any] = {"epoch": epoch, "global_step": self.ddpo.global_step}
        totals = torch.cat([r.total.float() for r in results])
        m["policy/total"] = float(totals.mean())
        m["reward_std"] = float(totals.std(unbiased=False))
        for side in ("policy", "anchor"):
            comps = [getattr(r, side) for r in results]
            if any(c is None for c in comps):
                continue
            for name in ("r_align", "diag_acc", "consistency"):
                values = [getattr(c, name) for c in comps]
                if all(v is not None for v in values):
                    m[f"{side}/{name}"] = float(torch.cat([v.float() for v in values]).mean())
        anchors = [r.anchor for r in results]
        if all(a is not None for a in anchors):
            # the anchor's own total under the same reward: comparative terms vs itself are zero
            m["anchor/total"] = float(
                torch.cat([_anchor_total(a, self.weights, self.cfg.rewards.rlcf) for a in anchors]).mean()
            )
        m["approx_kl"] = train_stats.get("approx_kl", float("nan"))
        m["clipfrac"] = train_stats.get("clipfrac", float("nan"))
        m["loss"] = train_stats.get("loss", float("nan"))
        if self.cache is not None:
            hits, misses = self.cache.hits - hits0, self.cache.misses - misses0
            m["cache_hit_rate"] = hits / (hits + misses) if hits + misses else 0.0
        m["reward_retries"] = retries
        for phase, secs in timings.items():
            m[f"time/{phase}"] = secs
        return m

    def _record(self, m: dict[str, Any]) -> None:
        log.info("%s", format_epoch_line(m, self.cfg.epochs))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "history.jsonl", "a") as fh:
            fh.write(json.dumps(m) + "\n")
        if self.store is not None:
            self.store.add_metrics(self.run_id, m["epoch"], m)

    def run(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run (or continue) until ``cfg.epochs`` epochs are done; ``on_epoch`` sees each epoch's metrics."""
        bar = tqdm(
            total=self.cfg.epochs,
            initial=self.epoch,
            desc=f"CXRL {self.run_id}",
            unit="epoch",
            disable=not self.progress,
        )
        try:
            while self.epoch < self.cfg.epochs:
                metrics = self.run_epoch()
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['policy/total']:.3f}")
                if on_epoch is not None:
                    on_epoch(metrics)
        finally:
            bar.close()
        return self.history


def _anchor_total(anchor: Components, weights: dict[str, float], rlcf: bool) -> torch.Tensor:
    """The anchor's own total [B]: under RLCF its comparative terms against itself are zero."""
    return combine(anchor, anchor, weights, rlcf=True) if rlcf else direct_total(anchor, weights)


def format_epoch_line(m: dict[str, Any], epochs: int) -> str:
    """One log line per epoch: policy/anchor mean of each component, total, KL, clip, cache, phase times."""

    def pa(name: str, label: str) -> str:
        p, a = m.get(f"policy/{name}"), m.get(f"anchor/{name}")
        if p is None:
            return ""
        return f" {label} {p:.4f}" + (f"/{a:.4f}" if a is not None else "")

    line = f"epoch {m['epoch'] + 1}/{epochs} policy/anchor:"
    line += pa("total", "total") + pa("r_align", "r_align") + pa("diag_acc", "acc") + pa("consistency", "cos")
    line += f" | kl {m['approx_kl']:.2e} clip {m['clipfrac']:.3f}"
    if "cache_hit_rate" in m:
        line += f" | cache hit {100 * m['cache_hit_rate']:.0f}%"
    else:
        line += " | cache off"
    if m.get("reward_retries"):
        line += f" | retries {m['reward_retries']}"
    line += " | time " + " ".join(f"{p} {m.get(f'time/{p}', 0.0):.1f}s" for p in PHASES)
    return line
