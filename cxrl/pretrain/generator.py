"""`cxrl pretrain generator`: train the default-world report-to-CXR latent diffusion model on a CPU.

Latent diffusion (Rombach et al. 2022) in three stages sized for a 2-core CPU:

1. a CLIP-format BPE tokenizer learned on the training reports (:func:`cxrl.pretrain.vocab.train_tokenizer`);
2. the KL autoencoder (L1 reconstruction + a small KL term), then every training image encoded
   once to a cached latent (the VAE's ``scaling_factor`` set to ``1 / std`` of those latents);
3. the UNet and the CLIP text encoder jointly on the cached latents with the epsilon-prediction
   loss of DDPM (Ho et al. 2020), 10% of reports dropped to "" for classifier-free guidance, and an
   exponential moving average of the weights, which is what is saved.

The result is a diffusers ``StableDiffusionPipeline`` directory in fp16 with a ``manifest.json``
(sha256 of every file, command, seed, settings, final losses) and ``samples.png`` (top row: real
training images; below: samples for the same reports, 20 DDIM steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm import tqdm

from cxrl import imaging
from cxrl.config import ConfigModel, add_set_argument
from cxrl.infra.hashing import sha256_file
from cxrl.models.generator import GeneratorArch, build_pipeline, load_pipeline
from cxrl.pretrain import fit
from cxrl.pretrain.vocab import train_tokenizer
from cxrl.rl.policy import Policy

log = logging.getLogger(__name__)


class PretrainConfig(ConfigModel):
    arch: GeneratorArch = Field(default_factory=GeneratorArch, description="pipeline architecture")
    vocab_size: int = Field(2048, description="tokenizer vocabulary size (bytes + merges + specials)")
    seed: int = Field(0, description="seed of initialisation, batches and noise")
    batch_size: int = Field(32, ge=1, description="images per optimiser step (both stages)")
    vae_steps: int = Field(600, ge=0, description="autoencoder optimiser steps")
    vae_lr: float = Field(1e-3, gt=0, description="autoencoder AdamW learning rate")
    kl_weight: float = Field(1e-6, ge=0, description="weight of the KL term of the autoencoder loss")
    vae_crop: int | None = Field(
        32,
        ge=8,
        description="train the (fully convolutional) autoencoder on random crops of this side; None = whole",
    )
    unet_steps: int = Field(3000, ge=0, description="UNet + text encoder optimiser steps")
    unet_lr: float = Field(5e-4, gt=0, description="UNet/text encoder AdamW learning rate")
    unet_minutes: float | None = Field(
        None,
        gt=0,
        description="stop the UNet stage after this many minutes (the manifest records the steps done)",
    )
    warmup_steps: int = Field(100, ge=0, description="linear learning-rate warm-up steps")
    uncond_prob: float = Field(0.1, ge=0, le=1, description="share of reports replaced by '' (for CFG)")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the saved UNet/text weights")
    grid_steps: int = Field(20, ge=1, description="DDIM steps of the sample grid")
    grid_guidance: float = Field(3.0, ge=1, description="guidance scale of the sample grid")


def load_world(data_dir: Path, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """Training images [N, 1, R, R] in [0, 1] and their reports, via the world dataset interface."""
    from cxrl.world.dataset import ImageDataset, load_records

    records = load_records(data_dir, split="train")
    if not records:
        raise ValueError(
            f"{data_dir} has no train records; build it with `cxrl world build --out {data_dir}`"
        )
    loader = torch.utils.data.DataLoader(ImageDataset(records, size=resolution), batch_size=64)
    images, reports = [], []
    for batch in tqdm(loader, desc="loading images", disable=None):
        images.append(batch["image"])
        reports.extend(batch["report"])
    return torch.cat(images), reports


def train_vae(vae, images: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator) -> list[float]:
    """Stage 2a: KL autoencoder on [N, 1, R, R] images. Returns the loss history."""
    vae.requires_grad_(True).train()
    opt, sched = fit.warmup(vae.parameters(), cfg.vae_lr, 0.0, cfg.warmup_steps)
    channels = vae.config.in_channels

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        x = imaging.to_diffusion(_crop(images[idx], cfg.vae_crop, gen), channels)  # [b, C, c, c] in [-1, 1]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        return F.l1_loss(rec, x) + cfg.kl_weight * post.kl().mean()

    batches = fit.random_batches(len(images), cfg.batch_size, gen)
    result = fit.fit(loss_fn, batches, opt, sched, cfg.vae_steps, clip_norm=1.0, name="vae")
    vae.requires_grad_(False).eval()
    return result.losses


def _crop(images: torch.Tensor, size: int | None, gen: torch.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` window of a batch [b, 1, R, R] (the same window for the batch)."""
    r = images.shape[-1]
    if size is None or size >= r:
        return images
    y, x = torch.randint(0, r - size + 1, (2,), generator=gen).tolist()
    return images[..., y : y + size, x : x + size]


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 128, rescale: bool = True) -> torch.Tensor:
    """Scaled posterior means [N, 4, h, w]; with ``rescale`` first sets ``scaling_factor`` to 1/std."""
    channels = vae.config.in_channels
    z = torch.cat(
        [
            vae.encode(imaging.to_diffusion(images[i : i + batch], channels)).latent_dist.mean
            for i in range(0, len(images), batch)
        ]
    )
    if rescale:
        vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return z * vae.config.scaling_factor


class EMA:
    """Exponential moving average of a set of parameters."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s)


def train_denoiser(
    pipe, latents: torch.Tensor, reports: list[str], cfg: PretrainConfig, gen: torch.Generator
) -> list[float]:
    """Stage 3: UNet + text encoder on scaled latents [N, 4, h, w] with the epsilon loss."""
    unet, text, sched = pipe.unet, pipe.text_encoder, pipe.scheduler
    tok = pipe.tokenizer
    ids = tok(
        reports, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(text.parameters())
    for m in (unet, text):
        m.requires_grad_(True).train()
    opt, lr_sched = fit.warmup(params, cfg.unet_lr, 1e-2, cfg.warmup_steps)
    ema = EMA(params, cfg.ema_decay)
    alphas = sched.alphas_cumprod  # [T_train]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        z0 = latents[idx]  # [b, 4, h, w]
        batch_ids = ids[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cfg.uncond_prob
        batch_ids[drop] = empty
        t = torch.randint(0, len(alphas), (len(idx),), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = alphas[t].reshape(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t, encoder_hidden_states=text(batch_ids)[0]).sample
        return F.mse_loss(pred, noise)

    batches = fit.random_batches(len(latents), cfg.batch_size, gen)
    budget = 60 * cfg.unet_minutes if cfg.unet_minutes else None
    result = fit.fit(
        loss_fn,
        batches,
        opt,
        lr_sched,
        cfg.unet_steps,
        clip_norm=1.0,
        after_step=ema.update,
        time_budget_s=budget,
        name="unet",
    )
    ema.copy_to_params()
    for m in (unet, text):
        m.requires_grad_(False).eval()
    return result.losses


@torch.no_grad()
def sample_grid(pipe, images: torch.Tensor, reports: list[str], cfg: PretrainConfig, path: Path) -> None:
    """Rows: real images, their VAE reconstructions, then 2 samples each for the same reports."""
    from cxrl.rl.sampler import sample

    policy = Policy(pipe, lora_rank=0, ace_tokens=0)
    embeds = policy.encode_prompts(reports)
    real = imaging.resize(images, cfg.arch.resolution)
    recon = imaging.from_diffusion(policy.decode(encode_latents(pipe.vae, real, rescale=False)))
    rows = [real, recon]
    for k in range(2):
        seeds = [cfg.seed * 1000 + 17 * i + k for i in range(len(reports))]
        rows.append(sample(policy, embeds, seeds, cfg.grid_steps, cfg.grid_guidance).images)
    grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)  # [1, rows*R, n*R]
    imaging.save_image(grid, path)


@contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def pretrain(
    data_dir: Path, out_dir: Path, cfg: PretrainConfig, command: str = "", init: Path | None = None
) -> dict:
    """Run all stages and write the pipeline directory atomically. Returns the manifest.

    With ``init`` (a pipeline this command wrote) training continues from its weights and tokenizer;
    with ``vae_steps=0`` its autoencoder and latent scale are kept as they are.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    images, reports = load_world(data_dir, cfg.arch.resolution)
    log.info("loaded %d training images at %d px", len(images), cfg.arch.resolution)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if init is None:
        tokenizer = train_tokenizer(reports, tmp / "tokenizer", cfg.vocab_size, cfg.arch.max_length)
        pipe = build_pipeline(cfg.arch, tokenizer, seed=cfg.seed)
    else:
        pipe = load_pipeline(init)
        if pipe.unet.config.sample_size != cfg.arch.latent_size:
            raise ValueError(
                f"{init} has {pipe.unet.config.sample_size}px latents, config says {cfg.arch.latent_size}"
            )
    vae_losses = train_vae(pipe.vae, images, cfg, gen) if cfg.vae_steps else []
    latents = encode_latents(pipe.vae, images, rescale=init is None or bool(vae_losses))
    log.info("latents %s, scaling_factor %.4f", list(latents.shape), pipe.vae.config.scaling_factor)
    unet_losses = train_denoiser(pipe, latents, reports, cfg, gen)
    with _quiet_diffusers():
        pipe.to(torch.float16)  # the shipped weights; the grid below is drawn from them
        pipe.save_pretrained(tmp, safe_serialization=True)
        pipe.to(torch.float32)
    sample_grid(pipe, images[:8], reports[:8], cfg, tmp / "samples.png")
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "model": "cxrl default-world generator (StableDiffusionPipeline)",
        "command": command,
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "train_images": len(images),
        "data_metadata_sha256": sha256_file(Path(data_dir) / "metadata.csv"),
        "init": None if init is None else json.loads((Path(init) / "manifest.json").read_text()),
        "steps": {"vae": len(vae_losses), "unet": len(unet_losses)},
        "final_loss": {"vae": _tail_mean(vae_losses), "unet": _tail_mean(unet_losses)},
        "minutes": round((time.time() - t0) / 60, 1),
        "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
        "size_bytes": sum(p.stat().st_size for p in files),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("wrote %s (%.1f MB) in %.1f min", out_dir, manifest["size_bytes"] / 1e6, manifest["minutes"])
    return manifest


def _tail_mean(values: list[float], n: int = 50) -> float | None:
    return round(sum(values[-n:]) / len(values[-n:]), 5) if values else None


def register_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generator", help="train the default-world report-to-CXR diffusion pipeline")
    p.add_argument("--data", required=True, type=Path, help="world directory (cxrl world build)")
    p.add_argument("--out", required=True, type=Path, help="output pipeline directory")
    p.add_argument("--config", type=Path, help="YAML PretrainConfig overriding the defaults")
    add_set_argument(p, "unet_steps=100 warmup_steps=0")
    p.add_argument(
        "--init", type=Path, help="continue from a pipeline this command wrote (e.g. more UNet steps)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.config:
        cfg = PretrainConfig.load(args.config, args.set)
    else:
        cfg = PretrainConfig.from_overrides(args.set)
    manifest = pretrain(args.data, args.out, cfg, command="cxrl " + " ".join(sys.argv[1:]), init=args.init)
    print(json.dumps({k: manifest[k] for k in ("steps", "final_loss", "minutes", "size_bytes")}))
    return 0
