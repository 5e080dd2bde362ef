"""TrainConfig: one CXRL training run of the trainer service.

It names the RL settings (a preset of :mod:`cxrl.rl.config` plus overrides), the reward backend
(``inprocess`` scorers, or ``grpc://host:port`` / ``grpcs://host:port`` with deadlines and retries), Redis (anchor cache,
metrics stream, run registry), where outputs go, and the held-out reports used for evaluation.
Loaded like every cxrl config (:meth:`cxrl.config.ConfigModel.load`): ``TrainConfig.load("demo",
["rl.epochs=3"])`` reads trainer/configs/demo.yaml (or a YAML path) with ``base:`` chains and
``--set``-style dotted overrides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from cxrl.config import ConfigModel, deep_merge
from cxrl.eval.heldout import HeldOutConfig
from cxrl.rewards.factory import RewardModelsConfig
from cxrl.rl.config import CXRLConfig
from trainer.metrics import MetricsSettings

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


GRPC_ONLY = ("timeout_s", "retries", "backoff_s", "token_env")  # RewardClientSettings a gateway call uses


class RewardClientSettings(ConfigModel):
    """Where rewards come from and how calls to them are made.

    ``timeout_s``, ``retries``, ``backoff_s`` and ``token_env`` concern calls to a gateway: in-process
    calls have no deadline and are never retried (an error there would repeat). A config may still set
    them with ``url: inprocess`` (`cxrl demo` loads such a config and points ``url`` at its gateway);
    a run that keeps ``inprocess`` logs which of them it does not use (:meth:`unused`).
    """

    url: str = Field(
        "inprocess",
        description="'inprocess' (scorers in this process), or the reward gateway at 'grpc://host:port' "
        "or 'grpcs://host:port' (TLS: CA and client certificate from CXRL_TLS_*)",
    )
    models: RewardModelsConfig = Field(
        default_factory=RewardModelsConfig,
        description="reward models of the in-process backend; over gRPC the service has its own, and the "
        "diagnostic model named here is loaded in the trainer as FID's feature model (eval.fid_features: "
        "auto)",
    )
    timeout_s: float = Field(120.0, gt=0, description="deadline of one reward call (gRPC) in seconds")
    retries: int = Field(
        4,
        ge=0,
        description="retries of a failed gRPC reward call (transient errors only); unused in-process (calls "
        "there are never retried: their errors would repeat; a run logs it when set): see call_retries",
    )
    backoff_s: float = Field(1.0, ge=0, description="first retry delay in seconds; doubles each retry")
    max_in_flight: int = Field(
        2, ge=1, description="reward calls allowed in flight while the next sub-batch samples"
    )
    token_env: str = Field(
        "CXRL_REWARD_TOKEN", description="environment variable holding the gateway's bearer token, if any"
    )

    @property
    def call_retries(self) -> int:
        """Retries of a failed reward call the run makes: ``retries`` over gRPC, 0 in-process."""
        return 0 if self.url == "inprocess" else self.retries

    def unused(self) -> list[str]:
        """The gateway-only settings this config sets (not left at their defaults) that its url does not use."""
        if self.url != "inprocess":
            return []
        return [name for name in GRPC_ONLY if name in self.model_fields_set]

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if v != "inprocess" and not v.startswith(("grpc://", "grpcs://")):
            raise ValueError(
                f"reward url must be 'inprocess', 'grpc://host:port' or 'grpcs://host:port', got {v!r}"
            )
        return v


class RedisSettings(ConfigModel):
    """Redis for the anchor cache, the metrics stream and the run registry."""

    url: str | None = Field(
        None, description="redis://host:port/db; None = the REDIS_URL environment variable; none = no Redis"
    )
    prefix: str = Field("cxrl", description="key prefix of everything the trainer writes")
    anchor_ttl_s: int | None = Field(None, ge=1, description="expiry of anchor cache entries; None = keep")
    retry_s: float = Field(
        5.0, ge=0, description="while Redis is unreachable, seconds between attempts to reach it again"
    )

    def resolved_url(self) -> str | None:
        return self.url or os.environ.get("REDIS_URL") or None


class EvalSettings(HeldOutConfig):
    """Held-out evaluation (:mod:`cxrl.eval.heldout`: reports, seeds, bootstrap) and the report's grids."""

    grid_prompts: int = Field(4, ge=0, description="held-out reports shown in the report's image grid")
    every: int = Field(0, ge=0, description="grid snapshot every this many epochs (0 = first and last only)")


class ScalingSettings(ConfigModel):
    """Data-parallel training on Ray Train (`cxrl train --workers N`)."""

    workers: int = Field(
        1, ge=1, description="training workers; > 1 runs the engine under Ray Train's TorchTrainer"
    )
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (NCCL when > 0, else gloo on CPUs)")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs Ray reserves per worker (fractions allowed)")
    max_failures: int = Field(
        2, ge=-1, description="worker-group restarts after a failure, each resuming from the last checkpoint"
    )
    address: str | None = Field(
        None, description="Ray cluster address (ray://... or auto); None = start a local Ray for this run"
    )


class TrainConfig(ConfigModel):
    """A trainer run: RL settings, reward backend, Redis, outputs, evaluation."""

    config_dir: ClassVar[Path] = CONFIG_DIR
    config_kind: ClassVar[str] = "trainer config"

    run_name: str | None = Field(None, description="run id; None = '<preset>-<utc time>'")
    out_dir: str = Field("out/runs", description="runs are written to OUT_DIR/<run id>/")
    preset: str = Field("cpu-small", description="RL preset name (cxrl/rl/presets) or a YAML path")
    rl: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the preset (nested mapping of CXRLConfig fields)"
    )
    train_prompts: int | None = Field(
        None, ge=1, description="use only this many training reports (seeded choice); None = all"
    )
    seed_bank: int = Field(
        4, ge=1, description="noise seeds per report; images draw from this fixed bank so anchors repeat"
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = torch default")
    anchor_ahead: bool = Field(
        True,
        description="sample the frozen anchor for coming epochs and for the evaluation on a background "
        "thread with its own copy of the generator (cxrl.rl.anchor_ahead.AnchorAhead); same results, less wall time "
        "when a core or the GPU has room; costs one more copy of the generator's weights",
    )
    progress: bool = Field(True, description="tqdm progress bars (off when stderr is not a terminal)")
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="data-parallel workers")
    rewards: RewardClientSettings = Field(default_factory=RewardClientSettings, description="reward backend")
    redis: RedisSettings = Field(default_factory=RedisSettings, description="Redis")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="held-out evaluation")
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="the run's Prometheus /metrics endpoint (off by default)"
    )

    @model_validator(mode="after")
    def _rl_valid(self) -> TrainConfig:
        self.rl_config()  # raises ValueError naming the bad field
        return self

    def rl_config(self) -> CXRLConfig:
        """The validated RL config: the preset with ``rl`` overrides applied."""
        base = CXRLConfig.load(self.preset)
        return CXRLConfig.model_validate(deep_merge(base.model_dump(mode="json"), self.rl))
