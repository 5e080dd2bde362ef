"""A trainer-service epoch by phase: overlap of reward calls, anchor cache cold vs warm, trainer memory.

    python -m bench.bench_trainer --out out/bench [--backends inprocess [grpc]] [--repeats 2] [--threads 1]

Times real :class:`cxrl.rl.engine.Engine` epochs, wired as the trainer service wires them, (the cpu-small preset with 16 images in four
sub-batches of 4, 10 DDIM steps, the default-world generator and reward models, a private Redis
for the anchor cache). Each backend runs in its own process, so that process's max RSS is the
trainer's peak memory: ``inprocess`` holds the reward models, ``grpc`` scores through a
``cxrl serve`` started here (one replica per model; its process tree is monitored as well).
``make bench`` runs only ``inprocess`` here: bench_services times the same gRPC epochs
(:func:`run_worker`) on the service it starts anyway, which saves a service start-up.

Per backend, ``--repeats`` times: epoch 0 with an empty anchor cache (cold: anchors sampled,
scored and stored), then the same epoch 0 again (same reports and seeds) with the cache now warm.
Reported, from the engine's own phase timings (``cxrl.rl.sinks.PHASES``):

- overlap efficiency = epoch wall time / (policy sampling + anchor sampling + training +
  checkpoint): 1.0 means every reward call was hidden behind sampling; the serial bound (nothing
  overlapped) is (that sum + scoring) / that sum, also reported;
- warm/cold = wall time of the warm-cache epoch over the cold one (medians); the same for the
  trainer process's CPU seconds (``time.process_time``, all its threads), which other processes'
  load on a shared machine does not inflate; and, within the cold epochs alone, the share of the
  wall time outside the anchor phase (what a warm cache could at best leave).

Then, ``--repeats`` times, the same ``AHEAD_EPOCHS`` epochs from an empty cache with the anchor
sampled in line and sampled ahead on a background thread (:class:`cxrl.rl.anchor_ahead.AnchorAhead`), with a
seed bank wide enough that every epoch needs new anchors: ahead/in line = the ratio of their
wall times (medians).

Writes ``bench_trainer.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

EPOCH = {
    "epochs": 1000,  # never the last epoch: checkpoints follow checkpoint_every only
    "sampling.images_per_epoch": 16,
    "sampling.images_per_prompt": 2,
    "sampling.batch_size": 4,  # four sub-batches: scoring of one overlaps sampling of the next
    "train.batch_size": 4,
    "train.gradient_accumulation_steps": 1,
    "stat_tracker.min_count": 2,
}
SEED_BANK = 2  # as `cxrl demo`: with 2 images per report the warm epoch finds every anchor cached
COMPUTE = ("sample", "anchor", "train", "checkpoint")  # the work the trainer does itself
AHEAD_EPOCHS = 4  # anchor ahead vs in line: epochs 1.. can find their anchors sampled ahead
AHEAD_SEED_BANK = 1000  # a wide bank: every epoch needs new anchors, as early in a long run


def overlap(phases: dict[str, float], wall_s: float) -> dict[str, float]:
    """Overlap figures of one epoch from its phase seconds (keys of cxrl.rl.sinks.PHASES)."""
    compute = sum(phases.get(k, 0.0) for k in COMPUTE)
    if compute <= 0 or wall_s <= 0:
        raise ValueError(f"need positive compute ({compute}) and wall time ({wall_s}) to form ratios")
    score = phases.get("score", 0.0)
    return {
        "compute_s": compute,
        "overlap_efficiency": wall_s / compute,
        "serial_bound": (compute + score) / compute,
        "score_hidden_share": 1.0 - phases.get("score_wait", 0.0) / score if score > 0 else 1.0,
    }


def summarise_runs(runs: list[dict]) -> dict:
    """Medians over repeats of the cold and warm epochs, and the warm/cold and overlap ratios."""
    out: dict = {}
    for kind in ("cold", "warm"):
        rows = [r for r in runs if r["cache"] == kind]
        if not rows:
            raise ValueError(f"no {kind}-cache epoch among the runs; run at least one of each")
        out[kind] = {
            "wall_s": statistics.median(r["wall_s"] for r in rows),
            "cpu_s": statistics.median(r["cpu_s"] for r in rows),
            "phases_s": {k: statistics.median(r["phases_s"][k] for r in rows) for k in rows[0]["phases_s"]},
            "overlap_efficiency": statistics.median(r["overlap_efficiency"] for r in rows),
            "serial_bound": statistics.median(r["serial_bound"] for r in rows),
            "score_hidden_share": statistics.median(r["score_hidden_share"] for r in rows),
            "cache_hit_rate": statistics.median(r["cache_hit_rate"] for r in rows),
        }
    out["warm_over_cold"] = out["warm"]["wall_s"] / out["cold"]["wall_s"]
    # CPU seconds of the trainer process: what the cache saves it, unaffected by other processes' load
    out["warm_over_cold_cpu"] = out["warm"]["cpu_s"] / out["cold"]["cpu_s"]
    # within the cold epochs alone: the wall time left without the anchor phase (no drift between epochs)
    out["cold_without_anchor_share"] = (
        1.0 - out["cold"]["phases_s"].get("anchor", 0.0) / out["cold"]["wall_s"]
    )
    return out


def summarise_ahead(runs: list[dict]) -> dict:
    """Medians of the in-line and ahead runs (same epochs, empty cache each) and their wall-time ratio."""
    out: dict = {}
    for kind in ("inline", "ahead"):
        rows = [r for r in runs if r["kind"] == kind]
        if not rows:
            raise ValueError(f"no {kind} anchor run; run at least one of each")
        out[kind] = {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "anchor_s")}
    out["ahead_over_inline"] = out["ahead"]["wall_s"] / out["inline"]["wall_s"]
    return out


# -- worker: one backend, in its own process ---------------------------------------------------------
def build_backend(url: str, models: str, weights: dict[str, float]):
    if url == "inprocess":
        from cxrl.rewards.backend import InProcessRewards
        from cxrl.rewards.factory import RewardModelsConfig, build_scorers, random_scorers

        scorers = random_scorers(0) if models == "random" else build_scorers(RewardModelsConfig())
        return InProcessRewards(*scorers, weights=weights)  # the engine sends no anchors: direct totals
    from cxrl.client import RewardClient

    return RewardClient.from_url(url, weights=weights, timeout_s=300, retries=2)


def worker(url: str, models: str, repeats: int, threads: int) -> dict:
    """Warm-up, then ``repeats`` x (cold epoch 0, warm epoch 0); phase timings and max RSS."""
    import redis

    from bench.common import REPORTS
    from cxrl.infra.redis_local import LocalRedis
    from cxrl.log import setup_logging
    from cxrl.rl.anchor_ahead import AnchorAhead
    from cxrl.rl.config import CXRLConfig
    from cxrl.rl.frozen_anchor import FrozenAnchor
    from cxrl.rl.policy import make_policy
    from cxrl.rl.run import Wiring, build
    from cxrl.rl.sinks import PHASES
    from cxrl.rl.versioning import sampler_version
    from trainer.anchor_cache import AnchorCache

    setup_logging("WARNING")
    torch.set_num_threads(threads)
    cfg = CXRLConfig.load("cpu-small", EPOCH)
    t0 = time.perf_counter()
    policy = make_policy(cfg)
    backend = build_backend(url, models, cfg.rewards.weights)
    version = sampler_version(cfg.generator, cfg.sampling, backend.info())
    setup_s = time.perf_counter() - t0
    runs, ahead_runs = [], []
    with LocalRedis() as redis_url, tempfile.TemporaryDirectory(prefix="cxrl-bench-trainer-") as tmp:
        client = redis.Redis.from_url(redis_url)

        def engine(cfg_, name: str, cache, bank: int):
            wiring = Wiring(plan="seed-bank", seed_bank=bank)
            run = build(
                cfg_, REPORTS, backend, policy=policy, wiring=wiring, run_dir=Path(tmp) / name, anchors=cache
            )
            return run.engine

        def epoch(name: str, cfg_, cache) -> dict:
            loop = engine(cfg_, name, cache, SEED_BANK)
            try:
                start, cpu = time.perf_counter(), time.process_time()
                m = loop.run_epoch()
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            finally:
                loop.close()
            phases = {p: m[f"time/{p}"] for p in PHASES if f"time/{p}" in m}
            hit = m.get("cache_hit_rate", 0.0)
            return {"wall_s": wall, "cpu_s": cpu, "phases_s": phases, "cache_hit_rate": hit}

        # warm-up (first-call costs of every model) on a small epoch without the cache
        small = CXRLConfig.load(
            "cpu-small", {**EPOCH, "sampling.images_per_epoch": 4, "sampling.num_steps": 2}
        )
        epoch("warm-up", small, None)
        for r in range(repeats):
            cache = AnchorCache(client, version, prefix=f"bench-{r}")
            for kind in ("cold", "warm"):
                row = epoch(f"{kind}-{r}", cfg, cache)
                row.update(cache=kind, **overlap(row["phases_s"], row["wall_s"]))
                runs.append(row)
                print(
                    f"  [{url}] {kind} cache: epoch {row['wall_s']:.2f} s, hit rate "
                    f"{row['cache_hit_rate']:.0%}, overlap efficiency {row['overlap_efficiency']:.3f}",
                    flush=True,
                )
        # anchor ahead (cxrl.rl.anchor_ahead.AnchorAhead) vs in line: AHEAD_EPOCHS epochs from an empty cache each,
        # new anchors every epoch
        ahead_cfg = CXRLConfig.load("cpu-small", {**EPOCH, "epochs": AHEAD_EPOCHS})
        for r in range(repeats):
            for kind in ("inline", "ahead"):
                cache = AnchorCache(client, version, prefix=f"bench-ahead-{kind}-{r}")
                loop = engine(ahead_cfg, f"{kind}-{r}", cache, AHEAD_SEED_BANK)
                if kind == "ahead":
                    loop.ahead = AnchorAhead(
                        loop.plan, FrozenAnchor(policy), backend, cache, ahead_cfg.sampling, loop.spec
                    )
                try:
                    start = time.perf_counter()
                    history = loop.run(AHEAD_EPOCHS)
                    wall = time.perf_counter() - start
                finally:
                    loop.close()
                anchor_s = sum(m["time/anchor"] for m in history)
                ahead_runs.append({"kind": kind, "wall_s": wall, "anchor_s": anchor_s})
                print(
                    f"  [{url}] anchor {kind}: {AHEAD_EPOCHS} epochs {wall:.2f} s (anchor phase {anchor_s:.2f} s)"
                )
        client.close()
    close = getattr(backend, "close", None)
    if close:
        close()
    return {
        "backend": "inprocess" if url == "inprocess" else "grpc",
        "setup_s": setup_s,
        "runs": runs,
        "ahead_runs": ahead_runs,
        "trainer_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


# -- orchestration ---------------------------------------------------------------------------------
def run_worker(url: str, models: str, repeats: int, threads: int, tmp: Path) -> dict:
    """Epochs against ``url`` ("inprocess" or grpc://host:port) in a fresh process, summarised."""
    path = tmp / f"worker-{len(list(tmp.glob('worker-*')))}.json"
    cmd = [sys.executable, "-m", "bench.bench_trainer", "--worker", url, "--worker-json", str(path)]
    cmd += ["--models", models, "--repeats", str(repeats), "--threads", str(threads)]
    code = subprocess.call(cmd)
    if code != 0 or not path.is_file():
        raise RuntimeError(f"trainer benchmark worker for {url} failed with exit code {code}")
    result = json.loads(path.read_text())
    result.update(summarise_runs(result["runs"]))
    result["anchor_ahead"] = summarise_ahead(result["ahead_runs"])
    return result


def measure(args: argparse.Namespace) -> dict:
    from bench.common import service
    from bench.procmem import TreeMonitor

    report: dict = {"backends": {}}
    with tempfile.TemporaryDirectory(prefix="cxrl-bench-trainer-") as tmp:
        for backend in args.backends:
            if backend == "inprocess":
                res = run_worker("inprocess", args.models, args.repeats, args.threads, Path(tmp))
            else:
                with service(args.models, args.threads, 1, Path(tmp)) as serve:
                    with TreeMonitor(serve.proc.pid) as mon:
                        res = run_worker(serve.url, args.models, args.repeats, args.threads, Path(tmp))
                res["services_memory"] = mon.peaks.summary()
            report["backends"][backend] = res
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for bench_trainer.json")
    p.add_argument(
        "--backends",
        nargs="+",
        choices=("inprocess", "grpc"),
        default=["inprocess"],
        help="grpc starts its own `cxrl serve`; `make bench` times the gRPC epochs in bench_services, "
        "on the service that benchmark starts anyway",
    )
    p.add_argument("--repeats", type=int, default=2, help="cold/warm epoch pairs per backend")
    p.add_argument("--threads", type=int, default=1, help="torch threads (trainer and each model replica)")
    p.add_argument("--models", choices=("auto", "default", "random"), default="auto")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one backend in this process
    p.add_argument("--worker-json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.models == "auto":
        from cxrl.models.reward_assets import DEFAULT_ASSETS

        args.models = "default" if (DEFAULT_ASSETS / "posture").is_dir() else "random"
    if args.worker:
        result = worker(args.worker, args.models, args.repeats, args.threads)
        args.worker_json.write_text(json.dumps(result, indent=1))
        return 0

    load = os.getloadavg()[0]
    report = measure(args)
    report.update(
        preset="cpu-small",
        epoch_overrides=EPOCH,
        seed_bank=SEED_BANK,
        models=args.models,
        threads=args.threads,
        repeats=args.repeats,
        load_average_start=load,
        load_average_end=os.getloadavg()[0],
        cpus=os.cpu_count(),
        torch=torch.__version__,
    )
    for name, res in report["backends"].items():
        cold, warm = res["cold"], res["warm"]
        print(
            f"{name}: cold epoch {cold['wall_s']:.2f} s, warm {warm['wall_s']:.2f} s -> warm/cold "
            f"{res['warm_over_cold']:.3f}; overlap efficiency {cold['overlap_efficiency']:.3f} cold / "
            f"{warm['overlap_efficiency']:.3f} warm (serial bound {cold['serial_bound']:.3f}); "
            f"trainer peak RSS {res['trainer_peak_rss_mb']:.0f} MB"
        )
        for phase, secs in cold["phases_s"].items():
            print(f"    {phase:<11} cold {secs:7.2f} s   warm {warm['phases_s'][phase]:7.2f} s")
        a = res["anchor_ahead"]
        print(
            f"{name}: {AHEAD_EPOCHS} epochs, anchor in line {a['inline']['wall_s']:.2f} s, sampled ahead "
            f"{a['ahead']['wall_s']:.2f} s -> ahead/in line {a['ahead_over_inline']:.3f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "bench_trainer.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out / "bench_trainer.json")
    print(f"wrote {args.out / 'bench_trainer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
