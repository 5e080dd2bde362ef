"""The epoch engine against its compute floor, at 1 and 2 threads, timestep batching on and off.

    python -m bench.bench_engine --out out/bench [--repeats 2] [--epochs 2] [--generators default rgb]

Reference config: 20 DDIM steps, eta 1, guidance 5 in sampling and training, 16 images per epoch in
2 sub-batches of 8, train batch 4, all timesteps trained, LoRA rank 4, no ACE, direct feedback,
fp32, random reward scorers (the floor is the generator's). Generators: ``default`` (the committed
64 px greyscale default world) and ``rgb`` (a small Stable-Diffusion-shaped pipeline with an RGB VAE,
saved to a local directory and loaded the way RoentGen is).

Every (generator, threads, batching) setting runs in its own process, interleaved over repeats so
that drifts of this machine's speed hit all settings alike. A process runs a warm-up epoch, then
``--epochs`` timed epochs, then measures the **compute floor** at the loop's shapes: the UNet
forwards of sampling (sub-batch x CFG, every step) and the forward+backwards of training (minibatch
x ``timesteps_per_call`` x CFG, every call), each timed alone, at 1 thread and at the process's
own thread count. Reported: epoch / 1-thread floor, and, per thread count, the speed-up of
batching on (``timesteps_per_call`` = 20: a minibatch's steps in one call) over off (1).
Writes ``bench_engine.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REFERENCE = {
    "epochs": 1000,
    "sampling.num_steps": 20,
    "sampling.eta": 1.0,
    "sampling.guidance_scale": 5.0,
    "sampling.images_per_epoch": 16,
    "sampling.images_per_prompt": 2,
    "sampling.batch_size": 8,
    "train.batch_size": 4,
    "train.gradient_accumulation_steps": 1,
    "train.timestep_fraction": 1.0,
    "lora.rank": 4,
    "ace.enabled": False,
    "rewards.rlcf": False,
    "stat_tracker.min_count": 2,
}
BATCHED = 20  # timesteps_per_call with batching on: all 20 steps of a minibatch in one UNet call


def rgb_pipeline_dir(root: Path) -> Path:
    """A small SD-shaped pipeline (RGB VAE, 64 px) saved as a local diffusers directory."""
    from cxrl.models.generator import GeneratorArch, build_pipeline

    path = root / "rgb-pipeline"
    if not (path / "model_index.json").is_file():
        arch = GeneratorArch(
            resolution=64, image_channels=3, vae_channels=(32, 64, 64), unet_channels=(32, 64, 64)
        )
        build_pipeline(arch, seed=0).save_pretrained(path)
    return path


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def floor(policy, cfg, per_call: int, repeats: int = 3) -> dict[str, float]:
    """Seconds of the UNet calls one epoch makes, each shape timed alone (no scheduler, no decode)."""
    s, t = cfg.sampling, cfg.train
    c, h = policy.unet.config.in_channels, policy.unet.config.sample_size
    embeds = policy.encode_prompts(["Small left pleural effusion."])  # [1, M, d]
    ts = torch.tensor([500])

    def unet(b: int, grad: bool) -> None:
        x = torch.randn(b, c, h, h)
        e = embeds.expand(b, -1, -1)
        if grad:
            policy.predict_noise(x, ts.expand(b), e, s.guidance_scale).sum().backward()
        else:
            with torch.no_grad():
                policy.predict_noise(x, ts.expand(b), e, s.guidance_scale)

    n_sub = s.images_per_epoch // s.batch_size
    sample_s = _time(lambda: unet(s.batch_size, False), repeats) * n_sub * s.num_steps
    k = cfg.train_timesteps
    calls = -(-k // per_call)  # per minibatch
    minibatches = s.images_per_epoch // t.batch_size
    train_s = _time(lambda: unet(t.batch_size * per_call, True), repeats) * calls * minibatches
    policy.zero_grad(set_to_none=True)
    return {"sample_s": sample_s, "train_s": train_s, "floor_s": sample_s + train_s}


def worker(generator: str, threads: int, per_call: int, epochs: int, tmp: Path) -> dict:
    from bench.common import REPORTS
    from cxrl.log import setup_logging
    from cxrl.rewards.backend import InProcessRewards
    from cxrl.rewards.factory import random_scorers
    from cxrl.rl.config import CXRLConfig
    from cxrl.rl.policy import make_policy
    from cxrl.rl.run import build

    setup_logging("WARNING")
    torch.set_num_threads(threads)
    cfg = CXRLConfig.load("cpu-small", {**REFERENCE, "train.timesteps_per_call": per_call})
    cfg.generator = "default" if generator == "default" else str(rgb_pipeline_dir(tmp))
    policy = make_policy(cfg)
    backend = InProcessRewards(*random_scorers(0), weights=cfg.rewards.weights)
    engine = build(cfg, REPORTS, backend, policy=policy).engine
    try:
        engine.run_epoch()  # warm-up
        walls, phases = [], []
        for _ in range(epochs):
            t0 = time.perf_counter()
            m = engine.run_epoch()
            walls.append(time.perf_counter() - t0)
            phases.append({k[5:]: v for k, v in m.items() if k.startswith("time/")})
    finally:
        engine.close()
    own = floor(policy, cfg, per_call)
    torch.set_num_threads(1)
    one = floor(policy, cfg, per_call) if threads != 1 else own
    epoch_s = statistics.median(walls)
    return {
        "generator": generator,
        "threads": threads,
        "timesteps_per_call": per_call,
        "epoch_s": epoch_s,
        "epochs_s": walls,
        "phases_s": phases[-1],
        "floor": own,
        "floor_1thread": one,
        "epoch_over_floor_1thread": epoch_s / one["floor_s"],
        "epoch_over_floor": epoch_s / own["floor_s"],
    }


def summarise(rows: list[dict]) -> dict:
    """Medians per setting, and the batching speed-up per (generator, threads)."""
    out: dict = {}
    for r in rows:
        key = f"{r['generator']}/{r['threads']}t/{'on' if r['timesteps_per_call'] > 1 else 'off'}"
        out.setdefault(key, []).append(r)
    table = {}
    for key, rs in out.items():
        table[key] = {
            "epoch_s": statistics.median(r["epoch_s"] for r in rs),
            "floor_1thread_s": statistics.median(r["floor_1thread"]["floor_s"] for r in rs),
            "floor_own_s": statistics.median(r["floor"]["floor_s"] for r in rs),
            "epoch_over_floor_1thread": statistics.median(r["epoch_over_floor_1thread"] for r in rs),
        }
    speedups = {}
    for key in table:
        if key.endswith("/on"):
            off = table[key[:-3] + "/off"]
            speedups[key[:-3]] = off["epoch_s"] / table[key]["epoch_s"]
    return {"settings": table, "batching_speedup": speedups}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/bench"))
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds over all settings")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per process (after a warm-up)")
    p.add_argument("--generators", nargs="+", choices=("default", "rgb"), default=["default", "rgb"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # generator threads per_call
    p.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        gen, threads, per_call = args.worker
        res = worker(gen, int(threads), int(per_call), args.epochs, args.tmp)
        args.worker_json.write_text(json.dumps(res))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxrl-bench-engine-") as tmp:
        if "rgb" in args.generators:
            rgb_pipeline_dir(Path(tmp))
        for r in range(args.repeats):
            for gen in args.generators:
                for threads in args.threads:
                    for per_call in (1, BATCHED):
                        out = Path(tmp) / f"row-{len(rows)}.json"
                        cmd = [
                            sys.executable,
                            "-m",
                            "bench.bench_engine",
                            "--worker",
                            gen,
                            str(threads),
                            str(per_call),
                            "--worker-json",
                            str(out),
                            "--tmp",
                            tmp,
                            "--epochs",
                            str(args.epochs),
                        ]
                        if subprocess.call(cmd) != 0:
                            raise RuntimeError(
                                f"bench_engine worker {gen} {threads}t per_call={per_call} failed"
                            )
                        row = json.loads(out.read_text())
                        rows.append(row)
                        print(
                            f"  [{r}] {gen} {threads}t timesteps/call {per_call:>2}: epoch {row['epoch_s']:.2f} s, "
                            f"floor {row['floor']['floor_s']:.2f} s ({threads}t) / {row['floor_1thread']['floor_s']:.2f}"
                            f" s (1t) -> epoch / 1-thread floor {row['epoch_over_floor_1thread']:.3f}",
                            flush=True,
                        )
    report = {
        "reference": REFERENCE,
        "batched_timesteps_per_call": BATCHED,
        "rows": rows,
        **summarise(rows),
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    for key, v in report["settings"].items():
        print(
            f"{key:<16} epoch {v['epoch_s']:6.2f} s  1-thread floor {v['floor_1thread_s']:6.2f} s  "
            f"epoch/floor {v['epoch_over_floor_1thread']:.3f}"
        )
    for key, v in report["batching_speedup"].items():
        print(f"{key:<12} batching on vs off: {v:.3f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_engine.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'bench_engine.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
