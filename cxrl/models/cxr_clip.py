"""CXR-CLIP (You et al., MICCAI 2023; kakaobrain/cxr-clip): image/report embeddings for r_consist.

Our own implementation of the released architecture, with the same module names so the
released checkpoints (``r50_m.tar``, ``r50_mc.tar``, ``r50_mcc.tar``: a dict with ``config`` and
``model``) load directly:

- ``image_encoder.resnet.*``: a torchvision ResNet without its ``fc`` (ResNet-50 in the release),
  global average pooled; RGB input at 224 px.
- ``text_encoder.text_encoder.*``: a ``transformers`` BertModel (Bio_ClinicalBERT in the release);
  "eos" pooling = the hidden state at the last attended token ([SEP]).
- ``image_projection.projection`` / ``text_projection.projection``: linear maps to 512.
- ``logit_scale``: log(1 / temperature).

The default world uses the same classes with a small ResNet (BasicBlocks, narrow widths) and a
tiny BERT.

Image preprocessing is part of the config (``ClipConfig.preprocess``). The release's evaluation
transform (``configs/transform/default.yaml`` ``test``/``valid`` and ``transform_image`` with its
``normalize="huggingface"`` default) is torchvision ``Resize(224)`` (shorter side to 224, aspect
kept), ``CenterCrop(224)``, then ``Normalize(mean=0.5, std=0.5)`` per channel: ``RELEASE_PREPROCESS``,
set by ``release_config``. The default world was trained with a square resize and ImageNet
statistics, the config's default, so its committed checkpoint reads the same as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from transformers import BertConfig, BertModel

from cxrl import imaging
from cxrl.config import ConfigModel
from cxrl.models.safe_load import load_weights

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClipPreprocess(ConfigModel):
    """How a ``[B,1,H,W]`` [0,1] image becomes the image encoder's ``[B,3,S,S]`` input."""

    resize: Literal["square", "shorter_side_center_crop"] = Field(
        "square",
        description="'square': resize straight to SxS (aspect not kept); 'shorter_side_center_crop': "
        "shorter side to S keeping the aspect ratio, then the central SxS (torchvision Resize(S) + "
        "CenterCrop(S), the release's evaluation transform)",
    )
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="per-channel mean subtracted")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="per-channel std divided by")


RELEASE_PREPROCESS = ClipPreprocess(resize="shorter_side_center_crop", mean=(0.5,) * 3, std=(0.5,) * 3)


class ClipConfig(ConfigModel):
    """Architecture of a CXR-CLIP model (the release: resnet50 + Bio_ClinicalBERT + 512)."""

    image_arch: Literal["resnet50", "small"] = Field("resnet50", description="image encoder architecture")
    small_widths: tuple[int, int, int, int] = Field(
        (16, 32, 64, 128), description="channels of the four stages of the 'small' ResNet"
    )
    small_blocks: tuple[int, int, int, int] = Field(
        (1, 1, 1, 1), description="BasicBlocks per stage ('small')"
    )
    image_size: int = Field(224, ge=16, description="square input resolution in pixels")
    vocab_size: int = Field(28996, ge=8, description="BERT vocabulary size (Bio_ClinicalBERT: 28996)")
    hidden_size: int = Field(768, ge=8, description="BERT hidden width")
    num_layers: int = Field(12, ge=1, description="BERT transformer layers")
    num_heads: int = Field(12, ge=1, description="BERT attention heads")
    intermediate_size: int = Field(3072, ge=8, description="BERT feed-forward width")
    max_position: int = Field(512, ge=8, description="BERT position embeddings")
    text_max_length: int = Field(256, ge=8, description="reports are truncated to this many tokens")
    pooling: Literal["eos", "bos", "mean"] = Field("eos", description="how token states become one vector")
    proj_dim: int = Field(512, ge=1, description="shared embedding width")
    temperature: float = Field(0.07, gt=0, description="initial contrastive temperature")
    preprocess: ClipPreprocess = Field(
        default_factory=ClipPreprocess,
        description="image preprocessing (default: the default world's square resize + ImageNet stats; "
        "release checkpoints: RELEASE_PREPROCESS)",
    )


class SmallResNet(ResNet):
    """torchvision ResNet with BasicBlocks and custom stage widths (same attribute names)."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__(BasicBlock, list(blocks), num_classes=1)
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            setattr(self, f"layer{i + 1}", self._make_layer(BasicBlock, w, n, stride=1 if i == 0 else 2))
        self.fc = nn.Linear(widths[-1], 1)


class ImageEncoder(nn.Module):
    """``resnet`` trunk without ``fc``; returns pooled features ``[B, out_dim]``."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        if cfg.image_arch == "resnet50":
            self.resnet = ResNet(Bottleneck, [3, 4, 6, 3])
            self.out_dim = 2048
        else:
            self.resnet = SmallResNet(cfg.small_widths, cfg.small_blocks)
            self.out_dim = cfg.small_widths[-1]
        del self.resnet.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        x = r.layer4(r.layer3(r.layer2(r.layer1(x))))
        return torch.flatten(r.avgpool(x), 1)  # [B, out_dim]


class TextEncoder(nn.Module):
    """``text_encoder`` = a transformers BertModel; returns token states ``[B, T, hidden]``."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        bert_cfg = BertConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=cfg.max_position,
        )
        self.text_encoder = BertModel(bert_cfg)
        self.out_dim = cfg.hidden_size

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_encoder(**tokens).last_hidden_state


class Projection(nn.Module):
    """Linear projection head (``projection`` attribute as in the release)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class CXRClip(nn.Module):
    """Image and report encoders into one normalised embedding space."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.text_encoder = TextEncoder(cfg)
        self.image_projection = Projection(self.image_encoder.out_dim, cfg.proj_dim)
        self.text_projection = Projection(self.text_encoder.out_dim, cfg.proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1.0 / cfg.temperature)))))
        pre = cfg.preprocess
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,1,H,W]`` in [0,1] -> ``[B,3,S,S]`` normalised RGB at ``cfg.image_size`` (``cfg.preprocess``)."""
        s = self.cfg.image_size
        if self.cfg.preprocess.resize == "square":
            x = imaging.resize(images, s)
        else:
            x = center_crop(imaging.resize(images, shorter_side_size(images.shape[-2:], s)), s)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,1,H,W]`` in [0,1] -> unit-norm embeddings ``[B, proj_dim]``."""
        feats = self.image_encoder(self.preprocess(images))  # [B, out_dim]
        return F.normalize(self.image_projection(feats), dim=-1)

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenizer output (input_ids, attention_mask, ...) -> unit-norm embeddings ``[B, proj_dim]``."""
        states = self.text_encoder(tokens)  # [B,T,H]
        mask = tokens["attention_mask"]  # [B,T]
        if self.cfg.pooling == "eos":
            last = mask.sum(dim=1) - 1  # index of [SEP]
            pooled = states[torch.arange(states.shape[0]), last]
        elif self.cfg.pooling == "bos":
            pooled = states[:, 0]
        else:
            m = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def similarity(self, images: torch.Tensor, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-pair cosine ``[B]`` between image i and report i."""
        return (self.encode_image(images) * self.encode_text(tokens)).sum(dim=-1)


def shorter_side_size(hw: tuple[int, int] | torch.Size, size: int) -> tuple[int, int]:
    """(H, W) after torchvision ``Resize(size)``: the shorter side becomes ``size``, aspect kept."""
    h, w = int(hw[0]), int(hw[1])
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of ``[B,C,H,W]`` (torchvision ``CenterCrop`` offsets)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {h}x{w} image")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def tiny_config(vocab_size: int, max_length: int, proj_dim: int = 16) -> ClipConfig:
    """A test-sized architecture (32 px images, one 16-wide text layer) for random-weight models."""
    return ClipConfig(
        image_arch="small",
        small_widths=(4, 8, 8, 16),
        image_size=32,
        vocab_size=vocab_size,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position=max_length,
        text_max_length=max_length,
        proj_dim=proj_dim,
    )


def release_config(
    ckpt_config: dict, state: dict[str, torch.Tensor], bert_dir: str | None = None
) -> ClipConfig:
    """ClipConfig for a kakaobrain checkpoint: its ``config`` plus BERT sizes (config.json or the weights)."""
    model_cfg = ckpt_config.get("model", {})
    image_name = model_cfg.get("image_encoder", {}).get("name", "resnet")
    if image_name != "resnet":
        raise ValueError(
            f"only the ResNet-50 CXR-CLIP checkpoints are supported, this one has {image_name!r}"
        )
    head = model_cfg.get("projection_head", {})
    if head and head.get("name", "linear").lower() != "linear":
        raise ValueError(
            f"only linear projection heads are supported, this checkpoint has {head.get('name')!r}"
        )
    prefix = "text_encoder.text_encoder."
    emb = state[prefix + "embeddings.word_embeddings.weight"]  # [V,H]
    layers = {k.split(".")[4] for k in state if k.startswith(prefix + "encoder.layer.")}
    sizes = {
        "vocab_size": emb.shape[0],
        "hidden_size": emb.shape[1],
        "num_layers": len(layers),
        "num_heads": max(1, emb.shape[1] // 64),
        "intermediate_size": state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position": state[prefix + "embeddings.position_embeddings.weight"].shape[0],
    }
    if bert_dir is not None and (Path(bert_dir) / "config.json").is_file():
        bert = json.loads((Path(bert_dir) / "config.json").read_text())
        sizes["num_heads"] = int(bert.get("num_attention_heads", sizes["num_heads"]))
    base = ckpt_config.get("base", {})
    return ClipConfig(
        image_arch="resnet50",
        image_size=int(base.get("image_size", 224)),
        text_max_length=int(base.get("text_max_length", 256)),
        pooling=model_cfg.get("text_encoder", {}).get("pooling", "eos"),
        proj_dim=int(state["image_projection.projection.weight"].shape[0]),
        temperature=float(model_cfg.get("temperature", 0.07)),
        preprocess=RELEASE_PREPROCESS,
        **sizes,
    )


def load_release(
    checkpoint: str | Path, tokenizer_dir: str | Path | None = None, sha256: str | None = None
) -> CXRClip:
    """Load a kakaobrain CXR-CLIP checkpoint file (``{"config", "model"}``) into our CXRClip.
    Read weights-only after checking the pinned ``sha256`` if given (``cxrl.models.safe_load``)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(
            f"CXR-CLIP checkpoint {path} not found; give the local r50_mcc.tar (or r50_m/r50_mc)"
        )
    ckpt = load_weights(path, "CXR-CLIP checkpoint", (), sha256)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a CXR-CLIP checkpoint: expected a dict with 'config' and 'model'")
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    cfg = release_config(ckpt["config"], state, None if tokenizer_dir is None else str(tokenizer_dir))
    model = CXRClip(cfg)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("text_encoder.text_encoder.pooler.")]
    if missing:
        raise ValueError(f"{path} lacks weights for {len(missing)} parameters, e.g. {missing[:3]}")
    if result.unexpected_keys:
        log.info(
            "ignored %d checkpoint keys not used for embeddings, e.g. %s",
            len(result.unexpected_keys),
            result.unexpected_keys[:3],
        )
    return model.eval()
