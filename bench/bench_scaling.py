"""Data-parallel scaling of the engine on Ray Train: images per second with 1 and 2 workers, side by side.

    python -m bench.bench_scaling --out out/bench [--repeats 1] [--epochs 3] [--steps 20]

Each worker runs one torch thread (one process cannot use a second core here: a 2-thread UNet
forward+backward at the training batch is slower than a 1-thread one, while two 1-thread processes
side by side nearly double the throughput). The workload is the engine's reference epoch on the
default generator (16 images, sub-batches of 8, train batch 4, all steps trained, random reward
scorers in each worker, no Redis), ``--epochs`` epochs per run, the first one a warm-up. Runs
alternate 1 and 2 workers ``--repeats`` times, so a drift in this machine's speed hits both.

Reported per worker count: images/s = images per epoch / median epoch wall time (``time/epoch``
of the engine's history), and the median split of an epoch into sampling (policy + anchor),
training and communication (gathering rewards, summing gradients); then the ratio 2 / 1 worker.
Writes ``bench_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def config(out: Path, name: str, workers: int, epochs: int, steps: int):
    from trainer.config import TrainConfig

    return TrainConfig(
        run_name=name,
        out_dir=str(out),
        preset="cpu-small",
        rl={
            "epochs": epochs,
            "checkpoint_every": 1000,  # the last epoch only: checkpoint writes are not what scales
            "sampling": {"num_steps": steps, "images_per_epoch": 16, "images_per_prompt": 2, "batch_size": 8},
            "train": {
                "batch_size": 4,
                "gradient_accumulation_steps": 1,
                "timestep_fraction": 1.0,
                "timesteps_per_call": 1,
            },
            "stat_tracker": {"min_count": 2},
        },
        train_prompts=32,
        seed_bank=1000,  # new anchors every epoch, as early in a long run
        threads=1,
        progress=False,
        anchor_ahead=False,
        redis={"url": None},
        rewards={
            "url": "inprocess",
            "models": {k: {"source": "random"} for k in ("posture", "diagnostic", "consistency")},
        },
        eval={"prompts": 2, "grid_prompts": 0, "bootstrap": 0},
        scaling={"workers": workers, "cpus_per_worker": 1},
    )


def measure(out: Path, name: str, workers: int, epochs: int, steps: int) -> dict:
    from trainer.distributed import train_on_ray

    cfg = config(out, name, workers, epochs, steps)
    t0 = time.perf_counter()
    train_on_ray(cfg)
    wall = time.perf_counter() - t0
    history = [json.loads(x) for x in (out / name / "history.jsonl").read_text().splitlines()][1:]
    med = {
        k: statistics.median(m[f"time/{k}"] for m in history)
        for k in ("epoch", "sample", "anchor", "train", "comm")
    }
    images = cfg.rl_config().sampling.images_per_epoch
    return {
        "workers": workers,
        "wall_s": wall,
        "epoch_s": med["epoch"],
        "images_per_s": images / med["epoch"],
        "split_s": {"sampling": med["sample"] + med["anchor"], "training": med["train"], "comm": med["comm"]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/bench"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (all trained)")
    args = p.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="cxrl-bench-scaling-") as tmp:
            for r in range(args.repeats):
                for workers in (1, 2):
                    row = measure(Path(tmp), f"w{workers}-{r}", workers, args.epochs, args.steps)
                    rows.append(row)
                    s = row["split_s"]
                    print(
                        f"  [{r}] {workers} worker(s): {row['images_per_s']:.3f} images/s (epoch {row['epoch_s']:.1f} s:"
                        f" sampling {s['sampling']:.1f}, training {s['training']:.1f}, comm {s['comm']:.2f})",
                        flush=True,
                    )
    finally:
        ray.shutdown()
    by = {w: [r for r in rows if r["workers"] == w] for w in (1, 2)}
    ips = {w: statistics.median(r["images_per_s"] for r in rs) for w, rs in by.items()}
    split = {
        w: {k: statistics.median(r["split_s"][k] for r in rs) for k in ("sampling", "training", "comm")}
        for w, rs in by.items()
    }
    report = {
        "rows": rows,
        "images_per_s": {str(w): v for w, v in ips.items()},
        "split_s": split,
        "speedup_2_over_1": ips[2] / ips[1],
        "steps": args.steps,
        "epochs": args.epochs,
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    print(
        f"images/s: 1 worker {ips[1]:.3f}, 2 workers {ips[2]:.3f} -> 2/1 = {report['speedup_2_over_1']:.3f}x"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_scaling.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'bench_scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
