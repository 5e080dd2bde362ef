"""`make bench`: run the quick benchmarks one after another and summarise their JSON.

Each benchmark is its own script (``python -m bench.<name> --out DIR``) writing
``DIR/<name>.json``; this runner calls them in turn, then writes ``DIR/summary.md``:
a headline table of the key ratios (each measured side by side within one benchmark run),
then every number each benchmark recorded. ``bench_reproduce`` (about 90 minutes) is left
out; run it on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QUICK = (
    "bench_labeler",
    "bench_world",
    "bench_engine",
    "bench_scaling",
    "bench_trainer",
    "bench_services",
    "bench_autoscale",
)

# (measure, benchmark, key path in its JSON, what the number means)
HEADLINE = (
    (
        "engine epoch / 1-thread compute floor, default generator, 1 thread, batching on",
        "bench_engine",
        "settings.default/1t/on.epoch_over_floor_1thread",
        "reference config; target <= 1.05",
    ),
    (
        "engine epoch / 1-thread compute floor, default generator, 2 threads, batching on",
        "bench_engine",
        "settings.default/2t/on.epoch_over_floor_1thread",
        "target <= 1.05: 2 threads no slower than 1",
    ),
    (
        "engine epoch / 1-thread compute floor, RGB SD pipeline, 2 threads, batching on",
        "bench_engine",
        "settings.rgb/2t/on.epoch_over_floor_1thread",
        "small SD-shaped pipeline with an RGB VAE",
    ),
    (
        "timestep batching speed-up, default generator, 2 threads",
        "bench_engine",
        "batching_speedup.default/2t",
        "epoch off / on (timesteps_per_call 1 vs 20); target >= 1.4",
    ),
    (
        "data-parallel scaling: images/s 2 workers / 1 worker (1 thread each)",
        "bench_scaling",
        "speedup_2_over_1",
        "the engine on Ray Train, reference epoch, default generator; target >= 1.5",
    ),
    (
        "reward services autoscaling: peak posture replicas under load",
        "bench_autoscale",
        "replicas_peak",
        "Serve autoscaling 1-4 replicas; back to 1 after the load",
    ),
    (
        "reward services autoscaling: requests failed while scaling",
        "bench_autoscale",
        "requests_failed",
        "every request sent once, no retries",
    ),
    (
        "timestep batching speed-up, default generator, 1 thread",
        "bench_engine",
        "batching_speedup.default/1t",
        "epoch off / on at 1 thread (flat per-sample cost: ~1 expected)",
    ),
    (
        "reward service overhead: gateway over gRPC / in-process",
        "bench_services",
        "ratio",
        "median time to score 81 policy/anchor pairs (162 images, 256 px); target <= 1.15",
    ),
    (
        "replica scaling: throughput 2 replicas / 1 replica",
        "bench_services",
        "replica_scaling",
        "images/s with 2 clients; 1.0 = no gain",
    ),
    (
        "trainer epoch overlap efficiency, in-process rewards",
        "bench_trainer",
        "backends.inprocess.cold.overlap_efficiency",
        "epoch wall / (sampling + anchor sampling + training + checkpoint); 1.0 = rewards fully hidden",
    ),
    (
        "  serial bound (nothing overlapped), in-process",
        "bench_trainer",
        "backends.inprocess.cold.serial_bound",
        "(that sum + reward scoring) / that sum",
    ),
    (
        "trainer epoch overlap efficiency, gRPC rewards",
        "bench_services",
        "trainer_grpc.cold.overlap_efficiency",
        "as above, rewards from `cxrl serve`",
    ),
    (
        "  serial bound (nothing overlapped), gRPC",
        "bench_services",
        "trainer_grpc.cold.serial_bound",
        "(that sum + reward scoring) / that sum",
    ),
    (
        "anchor cache: warm / cold epoch time, in-process",
        "bench_trainer",
        "backends.inprocess.warm_over_cold",
        "the same epoch (reports, seeds) with every anchor cached",
    ),
    (
        "anchor cache: warm / cold trainer CPU time, in-process",
        "bench_trainer",
        "backends.inprocess.warm_over_cold_cpu",
        "CPU seconds of the trainer process, immune to other load",
    ),
    (
        "  cold epoch time outside the anchor phase, in-process",
        "bench_trainer",
        "backends.inprocess.cold_without_anchor_share",
        "within the cold epoch: the best a warm cache can leave",
    ),
    (
        "anchor sampled ahead / in line, 4 epochs wall time, in-process",
        "bench_trainer",
        "backends.inprocess.anchor_ahead.ahead_over_inline",
        "background thread with its own generator copy (cxrl.rl.anchor_ahead.AnchorAhead); empty cache each",
    ),
    (
        "anchor cache: warm / cold epoch time, gRPC",
        "bench_services",
        "trainer_grpc.warm_over_cold",
        "as above, rewards from `cxrl serve`",
    ),
    (
        "anchor cache: warm / cold trainer CPU time, gRPC",
        "bench_services",
        "trainer_grpc.warm_over_cold_cpu",
        "the trainer's own CPU seconds (rewards run in the services)",
    ),
    (
        "trainer peak RSS, gRPC rewards (MB)",
        "bench_services",
        "trainer_grpc.trainer_peak_rss_mb",
        "max RSS of the trainer process",
    ),
    (
        "trainer peak RSS, in-process rewards (MB)",
        "bench_trainer",
        "backends.inprocess.trainer_peak_rss_mb",
        "the same, holding the three reward models",
    ),
    (
        "services peak memory, 1 replica each (MB PSS)",
        "bench_services",
        "memory.1_replicas.peak_tree_pss_mb",
        "`cxrl serve` process tree: driver, Ray daemons, proxy, controller, replica workers",
    ),
    (
        "services peak memory, 2 replicas each (MB PSS)",
        "bench_services",
        "memory.2_replicas.peak_tree_pss_mb",
        "as above",
    ),
    (
        "largest replica worker peak RSS (MB)",
        "bench_services",
        "memory.1_replicas.max_replica_rss_mb",
        "one Ray Serve replica process",
    ),
    (
        "services / in-process scoring memory",
        "bench_services",
        "services_over_inprocess_memory",
        "service tree PSS (1 replica) over the max RSS of the process scoring in-process",
    ),
)


def flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, name + ".")
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            rows.append((name, value))
    return rows


def lookup(data: dict, path: str) -> object:
    """``data["a"]["b"]`` for ``path`` "a.b"; None where any part is missing."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def shown(value: object) -> str:
    """A headline number: 3 significant digits, whole numbers from 100 up (MB)."""
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def headline(out: Path) -> list[str]:
    """The key ratios as a markdown table; "not measured" where a benchmark wrote no such number."""
    cache: dict[str, dict] = {}
    lines = ["| measure | value | what |", "|---|---|---|"]
    for label, bench, path, note in HEADLINE:
        if bench not in cache:
            file = out / f"{bench}.json"
            cache[bench] = json.loads(file.read_text()) if file.is_file() else {}
        value = lookup(cache[bench], path)
        lines.append(f"| {label} | {shown(value)} | {note} |")
    return lines


def summarise(out: Path, results: dict[str, int], header: list[str] | None = None) -> str:
    lines = ["# Benchmarks", "", *(header or []), "", *headline(out), ""]
    for name, code in results.items():
        lines.append(f"## {name} (exit {code})")
        path = out / f"{name}.json"
        if not path.is_file():
            lines += ["", "no JSON written", ""]
            continue
        lines += ["", "| measure | value |", "|---|---|"]
        for key, value in flatten(json.loads(path.read_text())):
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {text} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=Path("out/bench"), help="directory for the JSON and summary.md"
    )
    ap.add_argument("--only", nargs="*", default=list(QUICK), choices=QUICK, help="benchmarks to run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    t_all = time.perf_counter()
    for name in args.only:
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", "--out", str(args.out)])
        results[name] = code
        print(f"{name}: exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - t_all
    header = [
        f"`python -m bench.run --out {args.out}` (`make bench`), started {began}, "
        f"{wall / 60:.1f} min wall on {os.cpu_count()} CPUs; load average at start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min), at end "
        f"{os.getloadavg()[0]:.2f} (1 min)."
    ]
    summary = summarise(args.out, results, header)
    (args.out / "summary.md").write_text(summary)
    print(summary)
    return max(results.values(), default=0)


if __name__ == "__main__":
    sys.exit(main())
