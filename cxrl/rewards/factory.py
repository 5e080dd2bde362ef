"""Build the three reward scorers from a typed config: default-world, real weights, or random.

Sources per model:
- ``default``: the committed default-world checkpoint in ``cxrl/assets/default/<model>/``;
- ``checkpoint``: a checkpoint directory written by ``cxrl pretrain <model>`` (e.g. the posture
  net trained on MIMIC-CXR-JPG);
- real releases: ``torchxrayvision`` (diagnostic; ``path`` = the local xrv cache directory) and
  ``cxr-clip`` (consistency; ``path`` = the kakaobrain ``.tar``, ``tokenizer_dir`` = a local
  Bio_ClinicalBERT directory);
- ``random``: small random-weight models for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from cxrl.config import ConfigModel
from cxrl.infra.hashing import sha256_file
from cxrl.models.cxr_clip import ClipConfig, CXRClip, load_release, tiny_config
from cxrl.models.posture import PostureConfig, PostureNet
from cxrl.models.reward_assets import DEFAULT_ASSETS, read_checkpoint, weights_hash
from cxrl.models.text_tokenizer import char_tokenizer, load_tokenizer
from cxrl.models.xrv_classifier import (
    DiagnosticConfig,
    build_densenet,
    load_xrv_densenet,
    xrv_weights_path,
)
from cxrl.rewards.consistency import ConsistencyScorer
from cxrl.rewards.diagnostic import DiagnosticScorer, Labeler
from cxrl.rewards.posture import PostureScorer
from cxrl.rewards.types import ModelInfo

Scorers = tuple[PostureScorer, DiagnosticScorer, ConsistencyScorer]
ModelKind = Literal["posture", "diagnostic", "consistency"]
KINDS: tuple[ModelKind, ...] = ("posture", "diagnostic", "consistency")  # the order of Scorers


class _Source(ConfigModel):
    @model_validator(mode="after")
    def _path_given(self):
        if self.source not in ("default", "random") and not self.path:
            raise ValueError(f"source {self.source!r} needs `path`")
        return self


class PostureModelConfig(_Source):
    """Where the posture net comes from."""

    source: Literal["default", "checkpoint", "random"] = Field(
        "default", description="default-world checkpoint, a `cxrl pretrain posture` directory, or random"
    )
    path: str | None = Field(None, description="checkpoint directory when source is 'checkpoint'")


class DiagnosticModelConfig(_Source):
    """Where the diagnostic classifier comes from."""

    source: Literal["default", "checkpoint", "torchxrayvision", "random"] = Field(
        "default", description="default-world checkpoint, our checkpoint dir, released xrv weights, or random"
    )
    path: str | None = Field(None, description="checkpoint dir, or the local torchxrayvision cache_dir")
    weights: str = Field(
        "densenet121-res224-all", description="torchxrayvision weights name (source torchxrayvision)"
    )
    sha256: str | None = Field(
        None,
        description="pinned sha256 of the release file, checked before it is read (source torchxrayvision); "
        "unpinned, it is read weights-only",
    )


class ConsistencyModelConfig(_Source):
    """Where the CXR-CLIP model comes from."""

    source: Literal["default", "checkpoint", "cxr-clip", "random"] = Field(
        "default", description="default-world checkpoint, our checkpoint dir, a kakaobrain release, or random"
    )
    path: str | None = Field(
        None, description="checkpoint dir, or the kakaobrain .tar file (source cxr-clip)"
    )
    tokenizer_dir: str | None = Field(None, description="local Bio_ClinicalBERT directory (source cxr-clip)")
    sha256: str | None = Field(
        None,
        description="pinned sha256 of the release file, checked before it is read (source cxr-clip); "
        "unpinned, it is read weights-only",
    )

    @model_validator(mode="after")
    def _tokenizer_given(self):
        if self.source == "cxr-clip" and not self.tokenizer_dir:
            raise ValueError("source 'cxr-clip' needs `tokenizer_dir` (a local Bio_ClinicalBERT directory)")
        return self


class RewardModelsConfig(ConfigModel):
    """The three reward models."""

    posture: PostureModelConfig = Field(
        default_factory=PostureModelConfig, description="posture alignment net"
    )
    diagnostic: DiagnosticModelConfig = Field(default_factory=DiagnosticModelConfig, description="classifier")
    consistency: ConsistencyModelConfig = Field(
        default_factory=ConsistencyModelConfig, description="CXR-CLIP"
    )
    device: str = Field("cpu", description="torch device the models run on")
    seed: int = Field(0, description="seed of the random-weight models (source 'random')")


def _version(directory: Path, manifest: dict) -> str:
    return str(manifest.get("version", directory.name))


def load_posture(directory: str | Path, device: str = "cpu") -> PostureScorer:
    path = Path(directory)
    state, manifest = read_checkpoint(path, "posture")
    model = PostureNet(PostureConfig(**manifest["config"]))
    model.load_state_dict(state)
    info = ModelInfo("posture-resnet18", _version(path, manifest), weights_hash(path))
    return PostureScorer(model, info, device=device)


def load_diagnostic(
    directory: str | Path, device: str = "cpu", labeler: Labeler | None = None
) -> DiagnosticScorer:
    path = Path(directory)
    state, manifest = read_checkpoint(path, "diagnostic")
    cfg = DiagnosticConfig(**manifest["config"])
    model = build_densenet(cfg)
    model.load_state_dict(state)
    info = ModelInfo("xrv-densenet-small", _version(path, manifest), weights_hash(path))
    return DiagnosticScorer(model, info, cfg.input_size, labeler=labeler, device=device)


def load_xrv_diagnostic(
    weights: str,
    cache_dir: str | Path,
    device: str = "cpu",
    labeler: Labeler | None = None,
    sha256: str | None = None,
) -> DiagnosticScorer:
    model = load_xrv_densenet(weights, cache_dir, sha256)
    info = ModelInfo("xrv-densenet121", weights, sha256_file(xrv_weights_path(weights, cache_dir)))
    return DiagnosticScorer(
        model, info, int(getattr(model, "input_resolution", 224)), labeler=labeler, device=device
    )


def load_consistency(directory: str | Path, device: str = "cpu") -> ConsistencyScorer:
    path = Path(directory)
    state, manifest = read_checkpoint(path, "clip")
    model = CXRClip(ClipConfig(**manifest["config"]))
    model.load_state_dict(state)
    info = ModelInfo("cxr-clip-small", _version(path, manifest), weights_hash(path))
    return ConsistencyScorer(model, load_tokenizer(path), info, device=device)


def load_cxr_clip_release(
    checkpoint: str | Path, tokenizer_dir: str | Path, device: str = "cpu", sha256: str | None = None
) -> ConsistencyScorer:
    model = load_release(checkpoint, tokenizer_dir, sha256)
    info = ModelInfo("cxr-clip-r50", Path(checkpoint).name, sha256_file(checkpoint))
    return ConsistencyScorer(model, load_tokenizer(tokenizer_dir), info, device=device)


def random_scorers(seed: int = 0, labeler: Labeler | None = None, device: str = "cpu") -> Scorers:
    """Small random-weight scorers (32 px inputs, tiny encoders) for service and RL tests."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        posture = PostureNet(PostureConfig(input_size=32))
        torch.nn.init.normal_(posture.backbone.fc.weight, std=0.05)  # vary psi across images
        diag_cfg = DiagnosticConfig(growth_rate=4, block_config=(2, 2), num_init_features=8, input_size=32)
        diag = build_densenet(diag_cfg, op_threshs=torch.full((18,), 0.5))
        _settle_batchnorm(diag, torch.rand(8, 1, 32, 32) * 2048 - 1024)  # xrv input range
        tokenizer = char_tokenizer()
        clip_cfg = tiny_config(len(tokenizer), 512, 16)
        clip = CXRClip(clip_cfg)
    version = f"random-seed{seed}"
    return (
        PostureScorer(posture, ModelInfo("posture-resnet18", version, "0" * 64), device=device),
        DiagnosticScorer(
            diag, ModelInfo("xrv-densenet-small", version, "0" * 64), 32, labeler, device=device
        ),
        ConsistencyScorer(clip, tokenizer, ModelInfo("cxr-clip-small", version, "0" * 64), device=device),
    )


@torch.no_grad()
def _settle_batchnorm(model: torch.nn.Module, batch: torch.Tensor) -> None:
    """Set BatchNorm running statistics from one batch so random models give unsaturated outputs."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    model(batch)
    model.eval()


def build_scorer(
    kind: ModelKind, cfg: RewardModelsConfig, labeler: Labeler | None = None
) -> PostureScorer | DiagnosticScorer | ConsistencyScorer:
    """The scorer of ``kind`` that ``cfg`` chooses: the one place a model's source picks its loader
    (:func:`build_scorers`, a reward service's model application, the FID features of
    :func:`build_diagnostic`). ``labeler`` reads the reports of the diagnostic scorer."""
    model, dev = getattr(cfg, kind), cfg.device
    if model.source == "random":
        return random_scorers(cfg.seed, labeler, dev)[KINDS.index(kind)]
    if kind == "posture":
        return load_posture(model.path or DEFAULT_ASSETS / "posture", dev)
    if kind == "diagnostic":
        if model.source == "torchxrayvision":
            return load_xrv_diagnostic(model.weights, model.path, dev, labeler, model.sha256)
        return load_diagnostic(model.path or DEFAULT_ASSETS / "diagnostic", dev, labeler)
    if model.source == "cxr-clip":
        return load_cxr_clip_release(model.path, model.tokenizer_dir, dev, model.sha256)
    return load_consistency(model.path or DEFAULT_ASSETS / "clip", dev)


def build_diagnostic(cfg: RewardModelsConfig, labeler: Labeler | None = None) -> DiagnosticScorer:
    """The diagnostic scorer chosen by ``cfg`` alone (:func:`build_scorers` builds the same one): also the
    FID feature model of an evaluation whose rewards come from a service (cxrl.eval.evaluate.feature_model)."""
    return build_scorer("diagnostic", cfg, labeler)


def build_scorers(cfg: RewardModelsConfig, labeler: Labeler | None = None) -> Scorers:
    """The three scorers chosen by ``cfg`` (random ones share ``cfg.seed``, built once)."""
    rand = random_scorers(cfg.seed, labeler, cfg.device) if "random" in _sources(cfg) else None
    posture, diagnostic, consistency = (
        rand[i] if getattr(cfg, kind).source == "random" else build_scorer(kind, cfg, labeler)
        for i, kind in enumerate(KINDS)
    )
    return posture, diagnostic, consistency


def scorers_from_yaml(path: str | Path | None, device: str = "cpu") -> Scorers:
    """The scorers a ``RewardModelsConfig`` YAML names (without one: the default world's), on ``device``."""
    cfg = RewardModelsConfig.from_yaml(path) if path else RewardModelsConfig()
    cfg.device = device
    return build_scorers(cfg)


def _sources(cfg: RewardModelsConfig) -> set[str]:
    return {cfg.posture.source, cfg.diagnostic.source, cfg.consistency.source}
