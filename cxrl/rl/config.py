"""Typed configuration of a CXRL run (DDPO policy optimisation with LoRA + ACE and RLCF rewards).

Defaults are the paper's (Han et al., MICCAI 2024, Sec. 3): 81 images per batch (= B of its Eq. 2:
81 images sampled per epoch, one report each, one optimiser step on all 81; batch-normalised
advantages; the reasoning is in presets/paper.yaml), AdamW lr 3e-4,
reward weights 1/10/10, N=3 ACE tokens, reports of M <= 74 tokens; DDPO's (Black et al. 2024) for
the rest (PPO clip 1e-4, advantage clip 5, eta=1, guidance 5). Presets live in ``presets/*.yaml``;
the paper's ablations are switches: ``ace.enabled: false`` (w/o ACE), ``rewards.rlcf: false``
(direct feedback) and any subset of ``rewards.weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from cxrl.config import ConfigModel
from cxrl.rewards.types import PAPER_WEIGHTS, REWARD_NAMES

PRESET_DIR = Path(__file__).resolve().parent / "presets"
# two kinds of preset share names (cpu-small, paper): said with errors about either kind's names
PRESET_KINDS = (
    "RL presets (cxrl/rl/presets: CXRLConfig, the RL loop's settings) are what a trainer config's "
    "`preset:` and a reproduce preset's `train_preset:` name; reproduce presets (cxrl/eval/presets: "
    "ReproduceConfig, `cxrl reproduce --preset`) name a reproduction's RL preset, seeds, variants and "
    "evaluation; cpu-small and paper each name one of both kinds, with different fields"
)


class LoraSettings(ConfigModel):
    rank: int = Field(4, ge=0, description="LoRA rank on the UNet attention projections; 0 = no LoRA")
    alpha: float | None = Field(None, description="LoRA alpha (scale alpha/rank); None = rank (scale 1)")
    targets: list[str] = Field(
        ["to_q", "to_k", "to_v", "to_out.0"], description="UNet module names that get LoRA adapters"
    )


class AceSettings(ConfigModel):
    enabled: bool = Field(
        True, description="learnable adaptive condition embeddings; false = w/o ACE ablation"
    )
    tokens: int = Field(3, ge=1, description="N, the number of ACE tokens prepended to the report embedding")
    init_std: float = Field(0.02, ge=0, description="standard deviation of the ACE initialisation")


class SamplingSettings(ConfigModel):
    num_steps: int = Field(50, ge=1, description="DDIM steps per image (T)")
    guidance_scale: float = Field(5.0, ge=1.0, description="classifier-free guidance scale (1 = none)")
    eta: float = Field(1.0, gt=0, description="DDIM eta; > 0 so each step is a Gaussian with a log-prob")
    images_per_epoch: int = Field(81, ge=1, description="images sampled and trained on per epoch (paper: 81)")
    images_per_prompt: int = Field(
        1, ge=1, description="images per report in an epoch (same report, different seeds)"
    )
    batch_size: int = Field(9, ge=1, description="images per sampling forward pass")
    shared_step_noise: bool = Field(
        False,
        description="the policy reuses the anchor's per-step DDIM noise too (False: only the initial "
        "latent is shared, the policy's step noise is fresh each epoch; see cxrl.rl.sampler)",
    )
    # -- the training sampler (evaluation always uses num_steps / guidance_scale / eta above) -------
    train_num_steps: int | None = Field(
        None,
        ge=1,
        description="DDIM steps of the trajectories sampled for training (and of their anchors); "
        "None = num_steps (the paper). Fewer than at evaluation: Flow-GRPO (Liu et al. 2025)",
    )
    train_guidance_scale: float | None = Field(
        None,
        ge=1.0,
        description="CFG scale of the training trajectories and of the loss's log-probs; 1 = CFG-free "
        "training (one UNet branch, Flow-GRPO); None = guidance_scale (the paper)",
    )
    window: int = Field(
        0,
        ge=0,
        description="stochastic steps per training trajectory: only these are sampled with eta and "
        "trained, the others are deterministic DDIM (eta 0); 0 = every step (the paper's DDPO). "
        "Flow-GRPO-Fast / MixGRPO",
    )
    window_start: int = Field(
        0, ge=0, description="index of the window's first step in the training schedule"
    )
    window_slide_every: int = Field(
        0,
        ge=0,
        description="move the window one step later every this many epochs (MixGRPO's sliding window), "
        "wrapping back to window_start after the last position; 0 = a fixed window",
    )
    branch: bool = Field(
        False,
        description="the images of a report in an epoch share one initial noise and the deterministic "
        "steps before the window (computed once per group) and branch at the window (Flow-GRPO-Fast); "
        "needs window > 0 and images_per_prompt > 1",
    )

    @property
    def train_steps(self) -> int:
        """DDIM steps of a training trajectory."""
        return self.train_num_steps or self.num_steps

    @property
    def train_guidance(self) -> float:
        """CFG scale of a training trajectory."""
        return self.guidance_scale if self.train_guidance_scale is None else self.train_guidance_scale

    def window_at(self, epoch: int) -> int:
        """The window's first step at ``epoch`` (fixed, or sliding one step per window_slide_every)."""
        if not self.window_slide_every:
            return self.window_start
        positions = self.train_steps - self.window - self.window_start + 1
        return self.window_start + (epoch // self.window_slide_every) % positions


class TrainSettings(ConfigModel):
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (paper: 3e-4)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    batch_size: int = Field(9, ge=1, description="images per training forward pass")
    gradient_accumulation_steps: int = Field(
        9, ge=1, description="minibatches summed per optimiser step (paper: 9 x 9 = B = 81 images, Eq. 2)"
    )
    inner_epochs: int = Field(1, ge=1, description="passes over each sampled batch")
    timestep_fraction: float = Field(
        1.0, gt=0, le=1, description="share of each trajectory's steps trained on (random per image)"
    )
    clip_range: float = Field(1e-4, gt=0, description="PPO ratio clip range (DDPO: 1e-4)")
    adv_clip_max: float = Field(5.0, gt=0, description="advantages are clipped to [-this, this]")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient norm clip")
    timesteps_per_call: int = Field(
        1,
        ge=1,
        description="(image, step) slots of a minibatch per UNet call in training; >1 batches several "
        "trained steps into one call (same gradient), which pays where the device is under-used at "
        "the training batch (GPUs, several CPU threads); bounded so large models still fit",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="weight of DPOK's per-step KL(policy || frozen anchor) on the policy's trajectory; "
        "0 = off (the paper's setting); > 0 costs one more UNet forward per trained step",
    )
    timestep_weighting: Literal["uniform", "noise_level"] = Field(
        "uniform",
        description="weight of each trained step's loss: uniform (the paper's DDPO), or noise_level: "
        "proportional to the step's DDIM standard deviation, normalised to mean 1 over the trainable "
        "steps (TempFlow-GRPO's noise-aware weighting, He et al. 2025): the log-prob gradient of a "
        "step grows as 1/sigma_t, so low-noise steps would otherwise dominate",
    )


class RewardSettings(ConfigModel):
    weights: dict[str, float] = Field(
        dict(PAPER_WEIGHTS),
        description="reward weights by name (align, diag, consist); omit a name to drop it",
    )
    rlcf: bool = Field(True, description="comparative feedback against the anchor; false = direct feedback")

    @model_validator(mode="after")
    def _check(self) -> RewardSettings:
        unknown = set(self.weights) - set(REWARD_NAMES)
        if unknown or not self.weights:
            raise ValueError(
                f"reward weights must be a non-empty subset of {REWARD_NAMES}, got {self.weights}"
            )
        return self

    @property
    def needs_anchor(self) -> bool:
        """The anchor is sampled only when a comparative term is on."""
        return self.rlcf and bool({"diag", "consist"} & set(self.weights))


class StatTrackerSettings(ConfigModel):
    per_prompt: bool = Field(
        False,
        description="normalise rewards per report (else over the epoch's whole batch: the paper "
        "preset, one image per report; see presets/paper.yaml)",
    )
    buffer_size: int = Field(16, ge=1, description="rewards remembered per report")
    min_count: int = Field(16, ge=1, description="below this many, a report uses the batch statistics")
    batch_fallback: bool = Field(
        True,
        description="per_prompt: a report with fewer than min_count rewards so far is normalised with "
        "the batch statistics (DDPO's tracker; logged with a count each epoch). false: refuse a config "
        "where that can happen (sampling.images_per_prompt < min_count)",
    )


class CXRLConfig(ConfigModel):
    """A CXRL fine-tuning run: ``CXRLConfig.load("paper", ["sampling.num_steps=20"])`` loads a preset
    (``presets/NAME.yaml``) or a YAML path with dotted overrides."""

    config_dir: ClassVar[Path] = PRESET_DIR
    config_kind: ClassVar[str] = "RL preset"
    config_note: ClassVar[str] = PRESET_KINDS

    generator: str = Field(
        "default", description="'default' or a local diffusers pipeline directory (RoentGen)"
    )
    data: str | None = Field(None, description="dataset directory whose train-split reports are the prompts")
    max_report_tokens: int = Field(74, ge=1, le=75, description="M: reports longer than this are skipped")
    seed: int = Field(0, description="seed of prompts, noise, LoRA/ACE init and training shuffles")
    epochs: int = Field(100, ge=1, description="epochs to run")
    checkpoint_every: int = Field(1, ge=1, description="write a checkpoint every this many epochs")
    checkpoint_keep: int = Field(
        3, ge=1, description="keep only the newest this many checkpoints (the final one is the newest)"
    )
    device: str = Field("cpu", description="torch device")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapters")
    ace: AceSettings = Field(default_factory=AceSettings, description="adaptive condition embeddings")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="trajectory sampling")
    train: TrainSettings = Field(default_factory=TrainSettings, description="policy optimisation")
    rewards: RewardSettings = Field(default_factory=RewardSettings, description="reward weights and RLCF")
    stat_tracker: StatTrackerSettings = Field(
        default_factory=StatTrackerSettings, description="advantage normalisation"
    )

    @model_validator(mode="after")
    def _check_batches(self) -> CXRLConfig:
        n, s, t = self.sampling.images_per_epoch, self.sampling, self.train
        if n % s.batch_size:
            raise ValueError(
                f"sampling.images_per_epoch ({n}) must be a multiple of sampling.batch_size ({s.batch_size})"
            )
        if n % s.images_per_prompt:
            raise ValueError(f"sampling.images_per_epoch ({n}) must be a multiple of images_per_prompt")
        step = t.batch_size * t.gradient_accumulation_steps
        if n % step:
            raise ValueError(
                f"sampling.images_per_epoch ({n}) must be a multiple of train.batch_size x "
                f"train.gradient_accumulation_steps ({step})"
            )
        if s.window_start + s.window > s.train_steps:
            raise ValueError(
                f"sampling.window_start ({s.window_start}) + window ({s.window}) exceeds the training "
                f"trajectory's {s.train_steps} steps: shrink the window or start it earlier"
            )
        if s.branch:
            if not s.window or s.images_per_prompt < 2 or s.shared_step_noise:
                raise ValueError(
                    "sampling.branch needs a stochastic window (window > 0), several images per report "
                    "(images_per_prompt > 1) and fresh step noise (shared_step_noise: false), or every "
                    "member of a group would be the same image"
                )
            if s.batch_size % s.images_per_prompt:
                raise ValueError(
                    f"sampling.branch: batch_size ({s.batch_size}) must be a multiple of images_per_prompt "
                    f"({s.images_per_prompt}) so a group is sampled in one sub-batch and shares its prefix"
                )
        st = self.stat_tracker
        if st.per_prompt and s.images_per_prompt < st.min_count and not st.batch_fallback:
            raise ValueError(
                f"stat_tracker.per_prompt with {s.images_per_prompt} image(s) per report per epoch never "
                f"reaches min_count ({st.min_count}) within an epoch and batch_fallback is off: set "
                "sampling.images_per_prompt >= stat_tracker.min_count, or per_prompt: false (batch "
                "normalisation), or batch_fallback: true"
            )
        return self

    @property
    def train_timesteps(self) -> int:
        """Steps per trajectory trained on (at least one): a share of its stochastic steps."""
        s = self.sampling
        return max(1, int((s.window or s.train_steps) * self.train.timestep_fraction))

    @property
    def optimizer_steps_per_epoch(self) -> int:
        step = self.train.batch_size * self.train.gradient_accumulation_steps
        return self.train.inner_epochs * self.sampling.images_per_epoch // step
