"""Epoch plans: which reports an epoch samples, with which noise seeds.

A plan is a pure function of (run seed, epoch), so a resumed run samples what the uninterrupted
run would have, and a data-parallel worker can take its share of the same plan. Two plans:

- :class:`FreshNoise` draws new initial-noise seeds every epoch (DDPO's setting);
- :class:`SeedBank` gives each report a fixed bank of seeds, so the frozen anchor's image for a
  (report, seed) pair recurs and an anchor store serves it after its first epoch.

In both, the policy's per-step DDIM noise comes from separate step seeds, fresh each epoch (see
:mod:`cxrl.rl.sampler`): policy and anchor share the initial latent only. With ``sampling.branch``
the images of a report in an epoch form one group sharing a single initial-noise seed (and so one
anchor): they differ only by their step noise inside the stochastic window (Flow-GRPO-Fast).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cxrl.rl.config import SamplingSettings


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch samples: image i is ``prompts[i]`` with initial noise ``seeds[i]``."""

    prompts: list[str]  # [N]
    seeds: list[int]  # [N] initial-latent seeds (shared with the anchor)
    step_seeds: list[int] | None  # [N] the policy's per-step noise; None = the seeds' own

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, index: Sequence[int]) -> EpochPlan:
        """The images at ``index``, in that order (a worker's share of the epoch)."""
        steps = None if self.step_seeds is None else [self.step_seeds[i] for i in index]
        return EpochPlan([self.prompts[i] for i in index], [self.seeds[i] for i in index], steps)


class Plan(Protocol):
    """Anything that plans epochs."""

    prompts: list[str]

    def __call__(self, epoch: int) -> EpochPlan: ...


def bank_seed(run_seed: int, report: str, slot: int) -> int:
    """Seed ``slot`` of a report's fixed noise bank (stable across runs with the same run seed)."""
    digest = hashlib.sha256(f"{run_seed}\0{slot}\0{report}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class FreshNoise:
    """``images_per_epoch // images_per_prompt`` reports per epoch, each with new seeds."""

    prompts: list[str]
    sampling: SamplingSettings
    seed: int

    def _reports(self, rng: np.random.Generator) -> list[str]:
        n = self.sampling.images_per_epoch // self.sampling.images_per_prompt
        idx = rng.choice(len(self.prompts), size=n, replace=n > len(self.prompts))
        return [self.prompts[i] for i in idx]

    def _step_seeds(self, epoch: int, n: int) -> list[int] | None:
        if self.sampling.shared_step_noise:
            return None
        rng = np.random.default_rng([self.seed, epoch, 1])
        return rng.integers(0, 2**31 - 1, size=n).tolist()

    def __call__(self, epoch: int) -> EpochPlan:
        rng = np.random.default_rng([self.seed, epoch])
        k = self.sampling.images_per_prompt
        prompts = [p for p in self._reports(rng) for _ in range(k)]
        if self.sampling.branch:  # one seed per group, shared by its k members
            seeds = [s for s in rng.integers(0, 2**31 - 1, size=len(prompts) // k).tolist() for _ in range(k)]
        else:
            seeds = rng.integers(0, 2**31 - 1, size=len(prompts)).tolist()
        return EpochPlan(prompts, seeds, self._step_seeds(epoch, len(prompts)))


@dataclass
class SeedBank(FreshNoise):
    """Like :class:`FreshNoise`, but each report draws its seeds from a fixed bank of ``bank`` seeds."""

    bank: int = 4

    def __post_init__(self) -> None:
        if self.bank < 1:
            raise ValueError(f"seed bank must hold at least one seed per report, got {self.bank}")

    def __call__(self, epoch: int) -> EpochPlan:
        rng = np.random.default_rng([self.seed, epoch])
        k = self.sampling.images_per_prompt
        prompts, seeds = [], []
        for report in self._reports(rng):
            if self.sampling.branch:  # one bank slot per group, shared by its k members
                slots = [int(rng.integers(self.bank))] * k
            else:
                slots = rng.choice(self.bank, size=k, replace=k > self.bank)
            for slot in slots:
                prompts.append(report)
                seeds.append(bank_seed(self.seed, report, int(slot)))
        return EpochPlan(prompts, seeds, self._step_seeds(epoch, len(prompts)))
