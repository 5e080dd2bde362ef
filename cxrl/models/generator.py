"""The report-to-CXR generator: a diffusers ``StableDiffusionPipeline`` plus the CXRL policy wrapper.

Two sources, one class:

- the default-world generator, a small pipeline built here (:func:`build_pipeline` from a
  :class:`GeneratorArch`) and trained by ``cxrl pretrain generator``; it works at 64 px greyscale
  (1-channel VAE with 3 blocks, 4x down-sampling to 4x16x16 latents; the world's 256 px images are
  resized for training and the reward scorers resize its output), so that a 2-core CPU samples a
  batch in seconds;
- a real pipeline (RoentGen or any Stable Diffusion 1.x/2.x directory in diffusers format), loaded
  from a local directory by :func:`load_pipeline`.

The CXRL policy on top of a pipeline (LoRA, ACE, the anchor) is :class:`cxrl.rl.policy.Policy`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from pydantic import Field, model_validator
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from cxrl.config import ConfigModel
from cxrl.infra.hashing import sha256_tree

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "assets" / "default" / "generator"


def generator_id(name: str) -> str:
    """sha256 over a pipeline directory's weight, config and tokenizer files ("default": the default world's)."""
    directory = DEFAULT_DIR if name == "default" else Path(name)
    return sha256_tree(directory, (".safetensors", ".bin", ".json", ".txt"))


LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


class GeneratorArch(ConfigModel):
    """Architecture of the small default-world pipeline (all components built from scratch)."""

    resolution: int = Field(64, description="image side in pixels (the world's 256 px images are resized)")
    image_channels: int = Field(1, description="VAE input/output channels: 1 = greyscale radiograph")
    vae_channels: tuple[int, ...] = Field(
        (16, 32, 64), description="VAE block widths; len-1 down-samplings (3 blocks = 4x)"
    )
    latent_channels: int = Field(4, description="latent channels (Stable Diffusion uses 4)")
    unet_channels: tuple[int, ...] = Field((32, 64, 64), description="UNet block widths")
    unet_layers_per_block: int = Field(1, description="ResNet layers per UNet block")
    attention_head_dim: int = Field(8, description="UNet attention head width")
    text_width: int = Field(64, description="text encoder hidden size = UNet cross-attention dim")
    text_layers: int = Field(3, description="text encoder transformer layers")
    text_heads: int = Field(4, description="text encoder attention heads")
    max_length: int = Field(77, description="token positions (BOS + up to 75 tokens + EOS)")
    num_train_timesteps: int = Field(1000, description="diffusion training timesteps")

    @model_validator(mode="after")
    def _check(self) -> GeneratorArch:
        factor = 2 ** (len(self.vae_channels) - 1)
        if self.resolution % factor:
            raise ValueError(f"resolution {self.resolution} must be a multiple of the VAE factor {factor}")
        if self.text_width % self.text_heads:
            raise ValueError(
                f"text_width {self.text_width} must be divisible by text_heads {self.text_heads}"
            )
        return self

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae_channels) - 1)


def tiny_arch() -> GeneratorArch:
    """A pipeline architecture that builds in milliseconds (32 px, 16x16 latents): tests and benches."""
    return GeneratorArch(
        resolution=32,
        vae_channels=(8, 16),
        unet_channels=(16, 32),
        attention_head_dim=8,
        text_width=16,
        text_layers=1,
        text_heads=2,
        max_length=32,
    )


def ddim_scheduler(config: dict | None = None, num_train_timesteps: int = 1000) -> DDIMScheduler:
    """A DDIM scheduler (eta=1 sampling needs a positive variance at the last step).

    ``set_alpha_to_one`` is forced off: with it, the last step's variance is 0 and its log-probability
    undefined. Stable Diffusion 1.x ships with it off already.
    """
    if config is None:
        return DDIMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="epsilon",
        )
    if config.get("set_alpha_to_one"):
        log.info("DDIM: using set_alpha_to_one=False so every eta=1 step has a positive variance")
    return DDIMScheduler.from_config(config, set_alpha_to_one=False)


def byte_level_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """A merge-free CLIP tokenizer over the 256 byte symbols (for tests and untrained pipelines)."""
    from cxrl.models.generator_tokenizer import byte_symbols

    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + [BOS, EOS])}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_pipeline(
    arch: GeneratorArch, tokenizer: CLIPTokenizer | None = None, seed: int = 0
) -> StableDiffusionPipeline:
    """A randomly initialised default-world pipeline of the given architecture (eval mode, fp32)."""
    torch.manual_seed(seed)
    tokenizer = tokenizer or byte_level_tokenizer(arch.max_length)
    vae = AutoencoderKL(
        in_channels=arch.image_channels,
        out_channels=arch.image_channels,
        down_block_types=("DownEncoderBlock2D",) * len(arch.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(arch.vae_channels),
        block_out_channels=tuple(arch.vae_channels),
        layers_per_block=1,
        latent_channels=arch.latent_channels,
        norm_num_groups=min(16, arch.vae_channels[0]),
        sample_size=arch.resolution,
        scaling_factor=1.0,
    )
    n = len(arch.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=arch.latent_size,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        block_out_channels=tuple(arch.unet_channels),
        layers_per_block=arch.unet_layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=arch.text_width,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=min(32, arch.unet_channels[0]),
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.text_width,
            intermediate_size=4 * arch.text_width,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=arch.text_heads,
            max_position_embeddings=arch.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim_scheduler(num_train_timesteps=arch.num_train_timesteps),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    freeze(pipe)
    return pipe


def load_pipeline(
    path: str | Path = "default", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> StableDiffusionPipeline:
    """Load a Stable Diffusion 1.x/2.x pipeline (RoentGen, the default world's) from a local directory.

    ``"default"`` names the committed default-world generator. Nothing is downloaded. The scheduler is
    replaced by a DDIM scheduler built from the pipeline's own scheduler config.
    """
    directory = DEFAULT_DIR if str(path) == "default" else Path(path)
    if not (directory / "model_index.json").is_file():
        raise ValueError(
            f"{directory} is not a diffusers pipeline directory (no model_index.json); give a local "
            "StableDiffusionPipeline directory saved with save_pretrained (e.g. RoentGen) or 'default'"
        )
    index = json.loads((directory / "model_index.json").read_text())
    missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if c not in index]
    if missing:
        raise ValueError(
            f"{directory}/model_index.json lacks components {missing}; need a Stable Diffusion pipeline"
        )
    pipe = StableDiffusionPipeline.from_pretrained(
        str(directory),
        dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.scheduler = ddim_scheduler(dict(pipe.scheduler.config))
    pipe.to(device)
    freeze(pipe)
    return pipe


def freeze(pipe: StableDiffusionPipeline) -> None:
    """Put every base module in eval mode with gradients off (LoRA and ACE are added afterwards)."""
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.requires_grad_(False)
        module.eval()
