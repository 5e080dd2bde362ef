"""Reward gateway over gRPC vs in-process scoring: `python -m bench.bench_services [--out DIR]`.

Workload: 81 policy/anchor pairs (162 images) at 256 px with one report each, scored
with the comparative rewards (posture, diagnostic, consistency). Measures

1. in-process: ``InProcessRewards`` on the tensors, ``torch.set_num_threads(threads)``;
2. the same batch through ``cxrl serve`` (CPU profile, each model replica with the same
   ``threads``) via ``cxrl.client.RewardClient`` over gRPC (uint8 on the wire, no cache),
   alternating with (1) so both see the same background load;
3. throughput (images/s) with 1 and 2 replicas of each model, ``--concurrency`` clients,
   and the replica scaling ratio (2 replicas over 1);
4. peak memory of the service's whole process tree (driver, Ray daemons, proxy, controller,
   every replica worker), per role and in total, and of this (in-process) process;
5. while the 1-replica service is up, ``--trainer-repeats`` cold/warm trainer epochs scored
   over gRPC (:func:`bench.bench_trainer.run_worker`: phases, overlap, anchor cache, the
   trainer's peak RSS), which also load the service the way training does.

Prints the medians and the ratio gateway/in-process (target <= 1.15) and writes
bench_services.json to --out. Models: the default-world checkpoints when present, else
random weights (``--models``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.bench_trainer import run_worker
from bench.common import REPORTS, service
from bench.procmem import TreeMonitor
from cxrl import imaging
from cxrl.client import RewardClient
from cxrl.models.reward_assets import DEFAULT_ASSETS
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import RewardModelsConfig, build_scorers, random_scorers

TARGET_RATIO = 1.15
METRICS_OVERHEAD = 0.03  # metrics may cost at most 3 % of throughput


def workload(pairs: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    policy = imaging.from_uint8(torch.randint(0, 256, (pairs, 1, size, size), generator=g, dtype=torch.uint8))
    anchor = imaging.from_uint8(torch.randint(0, 256, (pairs, 1, size, size), generator=g, dtype=torch.uint8))
    return policy, anchor, [REPORTS[i % len(REPORTS)] for i in range(pairs)]  # [P,1,S,S] x2


def timed(fn, repeats: int, warm_up: bool = True) -> list[float]:
    if warm_up:
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def throughput(target: str, batch, concurrency: int, rounds: int) -> float:
    """Images per second with ``concurrency`` clients each scoring the batch ``rounds`` times."""
    policy, anchor, reports = batch
    errors: list[BaseException] = []

    def worker():
        try:
            with RewardClient(target) as client:
                for _ in range(rounds):
                    client.score(policy, reports, anchor)
        except BaseException as exc:  # reported after join
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return concurrency * rounds * 2 * policy.shape[0] / (time.perf_counter() - t0)


def interleaved(backend, target: str, batch, repeats: int, results: dict[str, list[float]]) -> None:
    """In-process and gateway calls in turn, so both see the same background load on a shared machine."""
    policy, anchor, reports = batch
    with RewardClient(target) as client:
        backend.score(policy, reports, anchor)
        client.score(policy, reports, anchor)  # warm-up
        for _ in range(repeats):
            results["inprocess_s"] += timed(lambda: backend.score(policy, reports, anchor), 1, False)
            results["grpc_s"] += timed(lambda c=client: c.score(policy, reports, anchor), 1, False)


def on_service(replicas: int, models: str, args, backend, batch, results: dict, memory: dict, tmp: Path):
    """Start ``cxrl serve`` with ``replicas`` per model and measure on it (memory all along)."""
    with service(models, args.threads, replicas, tmp) as serve, TreeMonitor(serve.proc.pid) as mon:
        target = serve.grpc_target
        if replicas == 1:
            interleaved(backend, target, batch, args.repeats, results)
            print(
                f"in-process: median {statistics.median(results['inprocess_s']):.3f} s, "
                f"gateway over gRPC: median {statistics.median(results['grpc_s']):.3f} s per "
                f"{2 * batch[0].shape[0]} images ({models} models, {args.threads} thread(s))"
            )
        throughput(target, batch, args.concurrency, rounds=1)  # warm-up: every replica
        rate = throughput(target, batch, args.concurrency, rounds=max(1, args.repeats // 2))
        if replicas == 1 and args.trainer_repeats:
            print("trainer epochs with rewards over gRPC (bench.bench_trainer worker)", flush=True)
            url = f"grpc://{target}"
            results["trainer_grpc"] = run_worker(url, models, args.trainer_repeats, args.threads, tmp)
    results[f"throughput_{replicas}_replicas"] = rate
    mem = memory[f"{replicas}_replicas"] = mon.peaks.summary()
    print(
        f"throughput, {replicas} replica(s) per model, {args.concurrency} clients: {rate:.1f} images/s; "
        f"service peak memory {mem['peak_tree_pss_mb']:.0f} MB PSS over {mem['processes_seen']} processes"
    )


def metrics_overhead(models: str, args, batch, tmp: Path) -> dict:
    """Throughput of two services up at once, metrics on and off (``--no-metrics``), measured in
    turn (the order alternating each round) so both see the same background load."""
    import secrets

    token = secrets.token_urlsafe(32)  # one token for both, as the clients read CXRL_API_TOKEN
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with (
        service(models, args.threads, 1, tmp / "on", metrics=True, token=token) as on,
        service(models, args.threads, 1, tmp / "off", metrics=False, token=token) as off,
    ):
        targets = {"on": on.grpc_target, "off": off.grpc_target}
        for target in targets.values():
            throughput(target, batch, args.concurrency, rounds=1)  # warm-up
        for r in range(args.repeats):
            for name in ("on", "off") if r % 2 == 0 else ("off", "on"):
                rates[name].append(throughput(targets[name], batch, args.concurrency, rounds=1))
                print(f"metrics {name}: {rates[name][-1]:.1f} images/s", flush=True)
    ratio = statistics.median(rates["on"]) / statistics.median(rates["off"])
    print(
        f"throughput metrics on / off: {ratio:.3f} (medians {statistics.median(rates['on']):.1f} / "
        f"{statistics.median(rates['off']):.1f} images/s; target >= {1 - METRICS_OVERHEAD:.2f})"
    )
    return {"metrics_on_images_s": rates["on"], "metrics_off_images_s": rates["off"], "on_over_off": ratio}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for bench_services.json")
    p.add_argument("--pairs", type=int, default=81, help="policy/anchor pairs per batch")
    p.add_argument("--size", type=int, default=256, help="image size in pixels")
    p.add_argument("--threads", type=int, default=1, help="torch threads in-process and per model replica")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (after one warm-up)")
    p.add_argument("--concurrency", type=int, default=2, help="parallel clients for the throughput runs")
    p.add_argument("--models", choices=("auto", "default", "random"), default="auto")
    p.add_argument(
        "--trainer-repeats",
        type=int,
        default=2,
        help="cold/warm trainer epoch pairs scored over gRPC on the 1-replica service (0 = skip)",
    )
    p.add_argument(
        "--metrics-overhead",
        action="store_true",
        help="only compare throughput with metrics on and off (two services side by side); "
        "writes bench_services_metrics.json",
    )
    args = p.parse_args(argv)
    models = args.models
    if models == "auto":
        models = "default" if (DEFAULT_ASSETS / "posture").is_dir() else "random"
    batch = workload(args.pairs, args.size, seed=0)
    if args.metrics_overhead:
        load = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="cxrl-bench-") as tmp:
            report = metrics_overhead(models, args, batch, Path(tmp))
        report.update(
            images=2 * args.pairs,
            size=args.size,
            models=models,
            concurrency=args.concurrency,
            load_average_start=load,
            load_average_end=os.getloadavg(),
            cpus=os.cpu_count(),
        )
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_services_metrics.json").write_text(json.dumps(report, indent=1))
        print(
            f"load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.out}/bench_services_metrics.json"
        )
        return 0 if report["on_over_off"] >= 1 - METRICS_OVERHEAD else 1
    policy, anchor, reports = batch

    torch.set_num_threads(args.threads)
    scorers = random_scorers(0) if models == "random" else build_scorers(RewardModelsConfig())
    backend = InProcessRewards(*scorers)
    results: dict = {"inprocess_s": [], "grpc_s": []}
    memory: dict = {}
    load = os.getloadavg()[0]
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cxrl-bench-") as tmp:
        for replicas in (1, 2):
            try:
                on_service(replicas, models, args, backend, batch, results, memory, Path(tmp))
            except RuntimeError as exc:  # e.g. a service that did not come up on an overloaded machine
                if replicas == 1:
                    raise
                errors[f"{replicas}_replicas"] = str(exc)[:2000]
                print(f"{replicas} replica(s): {str(exc)[:300]}", flush=True)
    ratio = statistics.median(results["grpc_s"]) / statistics.median(results["inprocess_s"])
    two = results.get("throughput_2_replicas")
    scaling = two / results["throughput_1_replicas"] if two is not None else None
    inprocess_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    services_over_inprocess = memory["1_replicas"]["peak_tree_pss_mb"] / inprocess_rss
    print(
        f"ratio gateway/in-process: {ratio:.3f} (target <= {TARGET_RATIO}) -> {'OK' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    if scaling is not None:
        print(f"replica scaling (throughput 2 replicas / 1 replica): {scaling:.3f}")
    two_mb = memory.get("2_replicas", {}).get("peak_tree_pss_mb", float("nan"))
    print(
        f"peak memory: services {memory['1_replicas']['peak_tree_pss_mb']:.0f} MB PSS (1 replica), "
        f"{two_mb:.0f} MB (2 replicas); in-process scoring process "
        f"{inprocess_rss:.0f} MB RSS; services/in-process {services_over_inprocess:.2f}"
    )
    if "trainer_grpc" in results:
        t = results["trainer_grpc"]
        print(
            f"trainer over gRPC: cold epoch {t['cold']['wall_s']:.2f} s, warm {t['warm']['wall_s']:.2f} s -> "
            f"warm/cold {t['warm_over_cold']:.3f}; overlap efficiency {t['cold']['overlap_efficiency']:.3f} "
            f"(serial bound {t['cold']['serial_bound']:.3f}); trainer peak RSS {t['trainer_peak_rss_mb']:.0f} MB"
        )
    report = {
        "images": 2 * args.pairs,
        "size": args.size,
        "threads": args.threads,
        "models": models,
        **results,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "replica_scaling": scaling,
        "concurrency": args.concurrency,
        "memory": memory,
        "inprocess_peak_rss_mb": round(inprocess_rss, 1),
        "services_over_inprocess_memory": services_over_inprocess,
        "errors": errors,
        "load_average_start": load,
        "load_average_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "bench_services.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out / "bench_services.json")
    print(f"wrote {args.out / 'bench_services.json'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
