"""Assemble a CXRL run once: the engine with its plan, anchor store, reward backend and sinks.

Every entry point gets its engine from :func:`build` (``cxrl train`` and ``cxrl demo`` through
:mod:`trainer.runner`, ``cxrl reproduce``, the benchmarks, the GPU check and the tests), so two runs
differ only in what their :class:`Wiring` names, never in hand-written assembly:

- the **plan** by name: ``fresh-noise`` (new initial noise every epoch, DDPO's setting) or
  ``seed-bank`` (a fixed bank of ``seed_bank`` seeds per report, so anchors recur; ``cxrl demo``);
- the **anchor store** by name: ``none``, ``memory`` (this process) or ``directory`` (files under
  ``anchor_dir``, shared by the runs of one machine: ``cxrl reproduce``); an app's own store (the
  trainer's Redis cache) is passed in as ``anchors=`` instead;
- how **reward calls** are made: calls in flight while the next sub-batch samples, retries of
  transient failures and their first delay.

The reward backend (in-process scorers or the gRPC client) and the sinks are objects the caller
makes: the library's RL layer imports no client and no app.

How the README's two figures are wired (same builder, same engine; the RL settings differ too: the
demo's trainer/configs/demo.yaml against the reproduction's cxrl/eval/presets):

- ``cxrl demo`` / ``cxrl train`` (:func:`trainer.runner.wiring`): ``seed-bank`` with the config's
  ``seed_bank`` seeds per report, the Redis anchor cache passed in, anchors sampled ahead on a
  second thread, reward retries over gRPC only (``rewards.retries``; 0 in-process);
- ``cxrl reproduce`` (:meth:`cxrl.eval.reproduce.Reproduction.wiring`): ``fresh-noise``, the
  ``directory`` store shared by the variants of a seed, no retries, nothing sampled ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cxrl.config import ConfigModel
from cxrl.rewards.types import RewardBackend
from cxrl.rl.anchor_store import AnchorStore, DirAnchorStore, MemoryAnchorStore
from cxrl.rl.config import CXRLConfig
from cxrl.rl.engine import Engine
from cxrl.rl.parallel import LOCAL, Group
from cxrl.rl.plan import FreshNoise, Plan, SeedBank
from cxrl.rl.policy import Policy, make_policy
from cxrl.rl.sinks import Sink
from cxrl.rl.versioning import sampler_version

# the comparative components an anchor must hold to serve any variant's RLCF total
ANCHOR_FIELDS = ("diag_acc", "consistency")


class Wiring(ConfigModel):
    """How a run is assembled (the rest is its CXRLConfig)."""

    plan: Literal["fresh-noise", "seed-bank"] = Field(
        "fresh-noise", description="fresh-noise: new seeds every epoch; seed-bank: a fixed bank per report"
    )
    seed_bank: int = Field(4, ge=1, description="seed-bank: noise seeds per report (anchors recur)")
    anchors: Literal["none", "memory", "directory"] = Field(
        "none", description="where sampled anchors are kept (an app's store is passed to build() instead)"
    )
    anchor_dir: str | None = Field(
        None, description="directory: the store's root (one subdirectory per version)"
    )
    max_in_flight: int = Field(2, ge=1, description="reward calls in flight while the next sub-batch samples")
    retries: int = Field(0, ge=0, description="retries of a transient reward-call failure (0 in-process)")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay in seconds; doubles each retry")

    @model_validator(mode="after")
    def _check(self) -> Wiring:
        if self.anchors == "directory" and not self.anchor_dir:
            raise ValueError("anchors: directory needs anchor_dir (where the anchor files go)")
        return self


@dataclass
class Run:
    """An assembled run: its engine and the pieces it was built from."""

    engine: Engine
    plan: Plan
    anchors: AnchorStore | None  # the anchor store (None: anchors sampled every time)
    backend: RewardBackend
    sinks: list[Sink] = field(default_factory=list)

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    @property
    def cfg(self) -> CXRLConfig:
        return self.engine.cfg

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_plan(wiring: Wiring, cfg: CXRLConfig, prompts: Sequence[str]) -> Plan:
    """The epoch plan the wiring names over ``prompts``."""
    if wiring.plan == "seed-bank":
        return SeedBank(list(prompts), cfg.sampling, cfg.seed, wiring.seed_bank)
    return FreshNoise(list(prompts), cfg.sampling, cfg.seed)


def make_anchor_store(
    wiring: Wiring, cfg: CXRLConfig, backend: RewardBackend, generator_hash: str | None = None
) -> AnchorStore | None:
    """The anchor store the wiring names (versioned by generator, sampler and reward models)."""
    if wiring.anchors == "memory":
        return MemoryAnchorStore()
    if wiring.anchors == "directory":
        version = sampler_version(cfg.generator, cfg.sampling, backend.info(), generator_hash)
        return DirAnchorStore(Path(wiring.anchor_dir), version, fields=ANCHOR_FIELDS)
    return None


def build(
    cfg: CXRLConfig,
    prompts: Sequence[str],
    backend: RewardBackend,
    *,
    policy: Policy | None = None,
    wiring: Wiring | None = None,
    run_dir: str | Path | None = None,
    anchors: AnchorStore | None = None,
    sinks: Sequence[Sink] = (),
    group: Group = LOCAL,
    generator_hash: str | None = None,
) -> Run:
    """The run of ``cfg`` over the training reports ``prompts``, scored by ``backend``.

    ``policy`` defaults to ``make_policy(cfg)``; ``anchors`` (an app's store) replaces the store the
    wiring names; ``run_dir`` is where checkpoints go (None: no checkpoints).
    """
    wiring = wiring or Wiring()
    if getattr(backend, "rlcf", None) is True:
        raise ValueError(
            "the engine forms the RLCF total itself from its anchors and sends the backend none: give a "
            "backend in direct mode (InProcessRewards without rlcf=True); cfg.rewards.rlcf says whether "
            "a run is comparative"
        )
    if anchors is None:
        anchors = make_anchor_store(wiring, cfg, backend, generator_hash)
    plan = make_plan(wiring, cfg, prompts)
    engine = Engine(
        cfg=cfg,
        policy=policy if policy is not None else make_policy(cfg),
        backend=backend,
        plan=plan,
        run_dir=run_dir,
        anchors=anchors,
        sinks=sinks,
        max_in_flight=wiring.max_in_flight,
        retries=wiring.retries,
        backoff_s=wiring.backoff_s,
        group=group,
    )
    return Run(engine, plan, anchors, backend, engine.sinks)
