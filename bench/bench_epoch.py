"""One CXRL epoch, timed by phase: policy sampling, anchor sampling, reward scoring, training.

    python -m bench.bench_epoch --out out/bench [--generator default|tiny|DIR] [--rewards random|default]
        [--preset cpu-small] [--data WORLD_DIR] [--threads 1] [--set sampling.num_steps=20 ...]

Also times sampling a batch of 8 at 20 DDIM steps (the generator's interactive speed) and reports
peak memory (process max RSS; CUDA peak when on a GPU). Writes bench_epoch.json to --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
import yaml

from cxrl.log import setup_logging

FALLBACK_REPORTS = [
    "No acute cardiopulmonary abnormality.",
    "Small left pleural effusion.",
    "Cardiomegaly with mild pulmonary edema.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Left upper lobe nodule.",
    "Right-sided pneumothorax.",
    "Pacemaker in place. Lungs are clear.",
    "Hyperinflated lungs consistent with emphysema.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    ap.add_argument(
        "--generator", default="default", help="'default', 'tiny' (random, 32 px) or a pipeline dir"
    )
    ap.add_argument("--rewards", choices=("random", "default"), default="random")
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--data", type=Path, help="world directory whose train reports are the prompts")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args()
    setup_logging("WARNING")
    torch.set_num_threads(args.threads)

    from cxrl.models.generator import build_pipeline, tiny_arch
    from cxrl.rewards.backend import InProcessRewards
    from cxrl.rewards.factory import RewardModelsConfig, build_scorers, random_scorers
    from cxrl.rl.config import load_preset
    from cxrl.rl.ddpo import DDPOTrainer, make_policy
    from cxrl.rl.sampler import sample

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    cfg = load_preset(args.preset, overrides)
    t0 = time.perf_counter()
    pipe = build_pipeline(tiny_arch()) if args.generator == "tiny" else None
    if pipe is None:
        cfg.generator = args.generator
    policy = make_policy(cfg, pipe)
    scorers = random_scorers(0) if args.rewards == "random" else build_scorers(RewardModelsConfig())
    rewards = InProcessRewards(*scorers, weights=cfg.rewards.weights, rlcf=cfg.rewards.rlcf)
    if args.data:
        from cxrl.world.dataset import load_records

        prompts = [r.report for r in load_records(args.data, "train")]
    else:
        prompts = FALLBACK_REPORTS
    setup_s = time.perf_counter() - t0

    # interactive speed: 8 images, 20 DDIM steps, the preset's guidance
    embeds = policy.encode_prompts(FALLBACK_REPORTS)
    sample(policy, embeds[:1], [0], num_steps=2)  # warm-up
    t0 = time.perf_counter()
    images = sample(policy, embeds, list(range(8)), 20, cfg.sampling.guidance_scale).images
    sample8_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = DDPOTrainer(cfg, policy, rewards, prompts, run_dir=run_dir)
        t0 = time.perf_counter()
        metrics = trainer.run_epoch()
        epoch_s = time.perf_counter() - t0
        ckpt_bytes = sum(p.stat().st_size for p in Path(run_dir).rglob("*") if p.is_file())

    phases = {k: round(v, 3) for k, v in trainer.timings.items()}
    result = {
        "generator": args.generator,
        "rewards": args.rewards,
        "preset": args.preset,
        "overrides": overrides,
        "threads": args.threads,
        "device": cfg.device,
        "image_size": list(images.shape[-2:]),
        "images_per_epoch": cfg.sampling.images_per_epoch,
        "ddim_steps": cfg.sampling.num_steps,
        "trained_steps": cfg.train_timesteps,
        "setup_s": round(setup_s, 3),
        "sample_8x20_s": round(sample8_s, 3),
        "epoch_s": round(epoch_s, 3),
        "phases_s": phases,
        "phase_share": {k: round(v / epoch_s, 3) for k, v in trainer.timings.items()},
        "anchor_over_policy": round(phases.get("sample_anchor", 0) / max(phases["sample_policy"], 1e-9), 3),
        "checkpoint_bytes": ckpt_bytes,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if torch.cuda.is_available()
        else None,
        "loss": metrics["loss"],
        "reward_mean": metrics["reward_mean"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_epoch.json").write_text(json.dumps(result, indent=1))
    print(f"sample 8 images x 20 DDIM steps: {sample8_s:.2f} s ({result['image_size'][0]} px)")
    print(
        f"one epoch ({cfg.sampling.images_per_epoch} images, {cfg.sampling.num_steps} steps): {epoch_s:.2f} s"
    )
    for k, v in phases.items():
        print(f"  {k:<14} {v:8.2f} s  {v / epoch_s:6.1%}")
    print(f"checkpoint {ckpt_bytes / 1e3:.1f} kB, peak RSS {result['peak_rss_mb']} MB")
    print(f"wrote {args.out / 'bench_epoch.json'}")


if __name__ == "__main__":
    main()
