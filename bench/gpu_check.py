"""GPU check: one paper-preset CXRL epoch at 512 px on an NVIDIA GPU, rewards from the GPU serve profile.

    python -m bench.gpu_check --out out/gpu            # a machine with an NVIDIA GPU, < 10 minutes
    python -m bench.gpu_check --smoke --out out/smoke  # CPU, toy sizes: keeps the script working in CI

What runs (nothing downloaded, every weight random, built from configs by :mod:`bench.realsize`):

1. the reward models at their real architectures (xrv DenseNet-121 224, CXR-CLIP ResNet-50 +
   BERT-base 224, posture ResNet-18 224) served by `cxrl serve` with the GPU profile
   (``services/configs/serve-gpu.yaml``: one replica per model, a third of the GPU each);
2. a Stable Diffusion 1.5-shaped pipeline (UNet ~860 M parameters) in float16 on the GPU, LoRA and
   ACE in float32 (:class:`cxrl.rl.policy.Policy`);
3. one epoch of the ``paper`` preset through the engine (:class:`cxrl.rl.engine.Engine`): 81 images,
   50 DDIM steps with guidance 5, anchors sampled (no cache), rewards over gRPC, one optimiser
   step on all 81.

Prints seconds per epoch, images per second, peak GPU memory (the trainer's allocator peak and the
whole GPU's peak used memory, which includes the reward replicas), seconds per UNet call and the
reward service's throughput; writes ``gpu_check.json``. Exits 1 on any failure (no GPU without
``--smoke``, service not ready, a non-finite reward or loss, an exception).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch


class GpuMemory:
    """Peak used memory of GPU 0 as nvidia-smi reports it (all processes: trainer and replicas)."""

    def __init__(self, interval_s: float = 0.5):
        self.peak_mb = 0.0
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> float:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return float(out.stdout.strip().splitlines()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_mb = max(self.peak_mb, self._read())
            except (OSError, subprocess.SubprocessError, ValueError):
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def service_throughput(target: str, size: int, pairs: int, rounds: int) -> float:
    """Images per second the gateway scores: ``pairs`` policy/anchor pairs at ``size`` px, ``rounds`` times."""
    from bench.common import REPORTS
    from cxrl.client import RewardClient

    g = torch.Generator().manual_seed(0)
    policy, anchor = (
        torch.rand(pairs, 1, size, size, generator=g),
        torch.rand(pairs, 1, size, size, generator=g),
    )
    reports = [REPORTS[i % len(REPORTS)] for i in range(pairs)]
    with RewardClient(target, timeout_s=600.0) as client:
        client.score(policy, reports, anchor)  # warm-up
        t0 = time.perf_counter()
        for _ in range(rounds):
            result = client.score(policy, reports, anchor)
            if not torch.isfinite(result.total).all():
                raise RuntimeError("the reward service answered a non-finite total")
        return rounds * 2 * pairs / (time.perf_counter() - t0)


def check(args: argparse.Namespace) -> dict:
    from bench import realsize
    from cxrl.infra.serve_process import ServeProcess

    cuda = not args.smoke
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch; run on a GPU machine, or use --smoke on CPU")
    device = "cuda" if cuda else "cpu"
    torch.set_num_threads(args.threads)
    out: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (smoke)", "smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="cxrl-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        ckpts = realsize.reward_checkpoints(tmp / "rewards", smoke=args.smoke)
        config = realsize.serve_config(tmp / "serve.yaml", ckpts, device, threads=args.threads)
        pipe = realsize.sd_pipeline(smoke=args.smoke)
        if cuda:
            pipe.to("cuda", torch.float16)  # fp16 base; Policy keeps LoRA and ACE in fp32
        out["build_s"] = time.perf_counter() - t0
        images, steps = (2, 2) if args.smoke else (args.images, args.steps)
        sample_batch = min(9, images)
        train_batch = 1 if args.smoke else args.train_batch
        cfg = realsize.epoch_config(images, steps, sample_batch, train_batch, device)
        os.environ["CXRL_API_TOKEN"] = secrets.token_urlsafe(32)  # the serve and our clients share it
        env = {"REDIS_URL": None, "CXRL_ALLOW_UNAUTHENTICATED": "1"}  # Ray itself: ServeProcess's local mode
        serve = ServeProcess(config, tmp / "serve.log", env=env)
        t0 = time.perf_counter()
        with serve, GpuMemory() as gpu_mem:
            out["serve_ready_s"] = time.perf_counter() - t0
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            engine, metrics, timer = realsize.run_paper_epoch(cfg, pipe, serve.grpc_target, tmp / "run", cuda)
            engine.close()
            size = 64 if args.smoke else 512
            out["service_images_per_s"] = service_throughput(serve.grpc_target, size, min(81, images * 4), 2)
        out.update(
            epoch_s=metrics["time/epoch"],
            images=images,
            steps=steps,
            images_per_s=images / metrics["time/epoch"],
            phases_s={k[5:]: round(v, 2) for k, v in metrics.items() if k.startswith("time/")},
            unet=timer.summary(),
            policy_total=metrics["policy/total"],
            trainer_peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            gpu_peak_used_mb=gpu_mem.peak_mb if cuda else None,
        )
    return out


def report(out: dict) -> str:
    lines = [
        f"GPU check on {out['device']}: paper preset, {out['images']} images x {out['steps']} DDIM steps",
        f"  seconds per epoch       {out['epoch_s']:.1f}  (phases: {out['phases_s']})",
        f"  images per second       {out['images_per_s']:.3f}",
    ]
    for kind, s in out["unet"].items():
        lines.append(
            f"  UNet {kind:6s} call      {s['s_per_call']:.3f} s ({s['rows_per_call']:.0f} rows, {s['calls']} calls)"
        )
    if out["trainer_peak_gpu_mb"] is not None:
        lines.append(
            f"  peak GPU memory         trainer {out['trainer_peak_gpu_mb']:.0f} MB allocated; "
            f"whole GPU {out['gpu_peak_used_mb']:.0f} MB used (with the reward replicas)"
        )
    lines.append(
        f"  reward service          {out['service_images_per_s']:.1f} images/s (policy+anchor pairs)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/gpu"), help="directory for gpu_check.json")
    p.add_argument("--smoke", action="store_true", help="CPU, toy sizes, 2 images x 2 steps (CI)")
    p.add_argument("--images", type=int, default=81, help="images in the epoch (paper: 81; a multiple of 9)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (paper preset: 50)")
    p.add_argument(
        "--train-batch",
        type=int,
        default=3,
        help="images per training forward (x2 rows with guidance; memory only: the optimiser step still "
        "covers all images); 81 must be a multiple",
    )
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="CPU threads")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        out = check(args)
    except Exception:  # report and fail: this script's whole job is to say whether it works
        traceback.print_exc()
        print("GPU check FAILED", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print(report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
