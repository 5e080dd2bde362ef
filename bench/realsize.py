"""Real-size pieces built offline from configs with random weights (shared by the GPU check and
the real-size CPU dry run).

- :func:`sd_pipeline`: a Stable Diffusion 1.5-architecture pipeline (RoentGen's shape): UNet with
  blocks (320, 640, 1280, 1280), 2 layers per block, cross-attention 768 (~860 M parameters); a
  CLIP ViT-L/14-sized text encoder (12 layers, width 768, 77 positions, vocabulary 49,408); the
  4-channel-latent VAE (128, 256, 512, 512) at 512 px; a DDIM scheduler. ``smoke`` gives the same
  code path at toy widths (64 px) for CI.
- :func:`reward_checkpoints`: the three reward models at their real architectures and input
  sizes, written as ``cxrl pretrain``-format checkpoint directories (source ``checkpoint``):
  torchxrayvision DenseNet-121 at 224 (growth 32, blocks 6-12-24-16), CXR-CLIP ResNet-50 + a
  BERT-base-sized text encoder (12 x 768, vocabulary 28,996) at 224 with the release's
  preprocessing, the posture ResNet-18 at 224.
- :func:`serve_config`: a `serve build` config (the CPU or GPU profile) serving those checkpoints.

Nothing is downloaded: the tokenizers are local (a byte-level CLIP tokenizer; a WordPiece
vocabulary written here), every weight is random.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from bench.common import REPORTS
from cxrl.models.generator import byte_level_tokenizer, ddim_scheduler, freeze

# Stable Diffusion 1.5 (RoentGen) component configurations; smoke = the same shapes scaled down.
SD15 = {
    "resolution": 512,
    "unet": {
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 768,
        "norm_num_groups": 32,
    },
    "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
    "text": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "vocab_size": 49408,
    },
}
SMOKE = {
    "resolution": 64,
    "unet": {
        "block_out_channels": (32, 32, 64, 64),
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "cross_attention_dim": 32,
        "norm_num_groups": 16,
    },
    "vae": {"block_out_channels": (16, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 16},
    "text": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "vocab_size": 600,
    },
}


def sd_pipeline(smoke: bool = False, seed: int = 0) -> StableDiffusionPipeline:
    """An SD-1.5-architecture pipeline with random weights, float32 on CPU, frozen (eval mode)."""
    arch = SMOKE if smoke else SD15
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer(77)
    u, v, t = arch["unet"], arch["vae"], arch["text"]
    n = len(u["block_out_channels"])
    unet = UNet2DConditionModel(
        sample_size=arch["resolution"] // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        **u,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=arch["resolution"],
        scaling_factor=0.18215,
        **v,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **t,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    freeze(pipe)
    return pipe


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reward_checkpoints(root: Path, smoke: bool = False, seed: int = 0) -> dict[str, Path]:
    """Random-weight reward checkpoints at real architectures (smoke: tiny) under ``root``."""
    from cxrl.models.cxr_clip import RELEASE_PREPROCESS, ClipConfig, CXRClip
    from cxrl.models.posture import PostureConfig, PostureNet
    from cxrl.models.reward_assets import write_checkpoint
    from cxrl.models.xrv_classifier import DiagnosticConfig, build_densenet

    torch.manual_seed(seed)
    size = 64 if smoke else 224
    out = {name: root / name for name in ("posture", "diagnostic", "clip")}
    posture_cfg = PostureConfig(input_size=size)
    write_checkpoint(
        out["posture"],
        "posture",
        PostureNet(posture_cfg).state_dict(),
        posture_cfg.model_dump(mode="json"),
        {},
    )
    diag_cfg = (
        DiagnosticConfig(growth_rate=4, block_config=(2, 2), num_init_features=8, input_size=size)
        if smoke
        else DiagnosticConfig(
            growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, input_size=224
        )
    )
    diag = build_densenet(diag_cfg, op_threshs=torch.full((18,), 0.5))
    write_checkpoint(out["diagnostic"], "diagnostic", diag.state_dict(), diag_cfg.model_dump(mode="json"), {})
    vocab = _write_vocab(out["clip"])
    clip_cfg = ClipConfig(
        image_arch="small" if smoke else "resnet50",
        image_size=size,
        vocab_size=vocab if smoke else 28996,  # Bio_ClinicalBERT's vocabulary size
        preprocess=RELEASE_PREPROCESS,
        **({"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64} if smoke else {}),
    )
    clip = CXRClip(clip_cfg)
    write_checkpoint(out["clip"], "clip", clip.state_dict(), clip_cfg.model_dump(mode="json"), {})
    return out


def _write_vocab(directory: Path) -> int:
    """A local WordPiece ``vocab.txt`` (special tokens + the bench reports' words); returns its size."""
    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({w.strip(".,").lower() for r in REPORTS for w in r.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + words
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "config.json").write_text('{"model_type": "bert"}\n')
    (directory / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizer", "do_lower_case": true}\n'
    )
    return len(vocab)


def serve_config(path: Path, checkpoints: dict[str, Path], device: str, threads: int = 1) -> Path:
    """The CPU (``device`` cpu) or GPU (cuda) serve profile, each model from its checkpoint, 1 replica."""
    from services.cli import CONFIG_DIR

    profile = "serve-gpu.yaml" if device.startswith("cuda") else "serve-cpu.yaml"
    data: dict[str, Any] = yaml.safe_load((CONFIG_DIR / profile).read_text())
    for app in data["applications"]:
        if app["name"] in checkpoints:
            key = app["name"]
        elif app["name"] == "consistency":
            key = "clip"
        else:
            continue
        app["args"].update(
            source="checkpoint", path=str(checkpoints[key]), device=device, num_threads=threads
        )
        for dep in app["deployments"]:
            dep.pop("autoscaling_config", None)
            dep["num_replicas"] = 1
    path.write_text(yaml.safe_dump(data))
    return path


class UnetTimer:
    """Times every UNet forward (hooks): sampling calls run without grad, training calls with grad."""

    def __init__(self, unet: torch.nn.Module, cuda: bool = False, echo: bool = False):
        self.calls: list[tuple[str, int, float, float]] = []  # (kind, batch rows, wall s, CPU s)
        self.cuda = cuda
        self.echo = echo  # print each call as it ends (long CPU runs)
        self._t0 = self._c0 = 0.0
        self._hooks = [
            unet.register_forward_pre_hook(self._start),
            unet.register_forward_hook(self._stop),
        ]

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self, module, args) -> None:
        self._sync()
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def _stop(self, module, args, output) -> None:
        self._sync()
        kind = "train" if torch.is_grad_enabled() else "sample"
        wall, cpu = time.perf_counter() - self._t0, time.process_time() - self._c0
        self.calls.append((kind, int(args[0].shape[0]), wall, cpu))
        if self.echo:
            print(
                f"UNet {kind} call: {args[0].shape[0]} rows, {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True
            )

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per kind: calls, rows per call (CFG doubles the images), wall seconds per call and per row,
        and the process's CPU seconds per call (immune to other jobs on a shared machine; all threads)."""
        out = {}
        for kind in ("sample", "train"):
            rows = [(b, s, c) for k, b, s, c in self.calls if k == kind]
            if rows:
                secs, n = sum(r[1] for r in rows), sum(r[0] for r in rows)
                cpu = sum(r[2] for r in rows)
                out[kind] = {
                    "calls": len(rows),
                    "rows_per_call": n / len(rows),
                    "s_per_call": secs / len(rows),
                    "s_per_row": secs / n,
                    "cpu_s_per_call": cpu / len(rows),
                    "cpu_s_per_row": cpu / n,
                }
        return out


def epoch_config(images: int, steps: int, sample_batch: int, train_batch: int, device: str) -> Any:
    """The paper preset, cut to ``images`` x ``steps`` (one optimiser step over all images, as the
    preset does for its 81) on ``device``."""
    from cxrl.rl.config import CXRLConfig

    return CXRLConfig.load(
        "paper",
        {
            "epochs": 1,
            "device": device,
            "sampling.images_per_epoch": images,
            "sampling.num_steps": steps,
            "sampling.batch_size": sample_batch,
            "train.batch_size": train_batch,
            "train.gradient_accumulation_steps": images // train_batch,
        },
    )


def run_paper_epoch(
    cfg: Any,
    pipe: StableDiffusionPipeline,
    target: str,
    run_dir: Path | None,
    cuda: bool = False,
    prepare: Any = None,
    echo: bool = False,
):
    """One engine epoch of ``cfg`` on ``pipe`` with rewards from the gateway at ``target`` (gRPC).

    ``prepare(policy)`` runs before the epoch (e.g. gradient checkpointing). Returns
    (engine, metrics, timer); the caller closes the engine.
    """
    from cxrl.client import RewardClient
    from cxrl.rl.policy import make_policy
    from cxrl.rl.run import build

    policy = make_policy(cfg, pipe)
    if prepare is not None:
        prepare(policy)
    timer = UnetTimer(policy.unet, cuda, echo)
    backend = RewardClient(target, weights=dict(cfg.rewards.weights), timeout_s=3600.0)
    engine = build(cfg, REPORTS, backend, policy=policy, run_dir=run_dir).engine
    t0 = time.perf_counter()
    metrics = engine.run_epoch()
    metrics["time/epoch"] = time.perf_counter() - t0
    bad = [k for k in ("policy/total", "loss") if not math.isfinite(float(metrics.get(k, float("nan"))))]
    if bad or metrics.get("dropped_images"):
        raise RuntimeError(
            f"epoch produced non-finite {bad} or dropped {metrics.get('dropped_images')} images"
        )
    return engine, metrics, timer
