"""`cxrl reproduce --preset cpu-small` as a benchmark: `python -m bench.bench_reproduce [--out DIR]`.

Runs the preset (anchor, CXRL, w/o ACE, w/o RLCF and each reward alone, over the preset's
seeds) on the default world, ``--jobs`` runs at once (the preset's: one process per core, one
torch thread each; ``--threads`` sets the main process's, which evaluates the anchor), and prints the wall-clock time against the
90-minute target, with the time of each (variant, seed) split into training and evaluation.
``--variants``/``--seeds`` run a subset; the total for the full preset is then extrapolated
from the measured runs (marked as such). The machine's load average is recorded, since other
processes on a shared machine slow every number here. Writes bench_reproduce.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from cxrl.eval.reproduce import VARIANTS, ReproduceConfig, reproduce
from cxrl.log import setup_logging

TARGET_S = 90 * 60.0


def run_times(out: Path) -> dict[str, dict[str, float]]:
    """Per (variant, seed): training and evaluation seconds (wall and CPU) recorded in its eval.json."""
    times = {}
    for path in sorted((out / "runs").glob("*/eval.json")):
        info = json.loads(path.read_text())["rows"][0]["info"]
        times[path.parent.name] = {
            "train_s": float(info.get("train_s", 0.0)),
            "eval_s": float(info.get("generate_and_score_s", 0.0)) + float(info.get("metrics_s", 0.0)),
            "train_cpu_s": float(info.get("train_cpu_s", 0.0)),
            "eval_cpu_s": float(info.get("eval_cpu_s", 0.0)),
        }
    return times


def extrapolate(times: dict[str, dict[str, float]], n_seeds: int, kind: str = "", jobs: int = 1) -> float:
    """Full-preset estimate from measured runs: anchor + real rows once, 6 x mean trained run per seed
    (divided among ``jobs`` processes for wall time).

    ``kind`` "" sums wall seconds, "cpu" CPU seconds.
    """
    sfx = f"_{kind}_s" if kind else "_s"
    once = ("anchor", "real")  # evaluated once for all seeds (the same held-out pairs), not trained
    groups = {p: [t["eval" + sfx] for k, t in times.items() if k == p] for p in once}
    trained = [t["train" + sfx] + t["eval" + sfx] for k, t in times.items() if k not in once]
    if not trained or not all(groups.values()):
        raise ValueError("need the anchor, real and at least one trained run to extrapolate")
    per_job = jobs if not kind else 1
    return (
        sum(v[0] for v in groups.values()) + n_seeds * len(VARIANTS) * sum(trained) / len(trained) / per_job
    )


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have finished."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="out/bench", help="directory for bench_reproduce.json")
    parser.add_argument("--preset", default="cpu-small", help="reproduce preset")
    parser.add_argument("--data", default=None, help="dataset directory (default: the preset's)")
    parser.add_argument("--work", default=None, help="reproduce output directory (default: a temp dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="subset of seeds (extrapolates)")
    parser.add_argument("--variants", nargs="+", default=None, help="subset of variants (extrapolates)")
    parser.add_argument("--rewards", default=None, help="RewardModelsConfig YAML (default: default world)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: the preset's)")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    torch.set_num_threads(args.threads)
    full = ReproduceConfig.load(args.preset, {} if args.data is None else {"data": args.data})
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-reproduce-"))
    load_before = os.getloadavg()
    jobs = args.jobs or full.jobs
    t0, c0 = time.perf_counter(), cpu_seconds()
    reproduce(
        args.preset,
        out=work,
        data=args.data,
        seeds=args.seeds,
        variants=args.variants,
        rewards=args.rewards,
        jobs=jobs,
    )
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - c0  # this process and its finished workers
    times = run_times(work)
    subset = args.seeds is not None or args.variants is not None
    total = extrapolate(times, len(full.seeds), jobs=jobs) if subset else wall
    # CPU seconds are robust to other load: on `threads` dedicated cores the wall time lies
    # between cpu/threads (perfect parallelism) and cpu (none)
    total_cpu = extrapolate(times, len(full.seeds), "cpu") if subset else cpu
    result = {
        "preset": args.preset,
        "seeds": args.seeds or full.seeds,
        "variants": args.variants or [v.slug for v in VARIANTS],
        "threads": args.threads,
        "jobs": jobs,
        "threads_per_job": full.threads_per_job,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "full_preset_s": round(total, 1),
        "full_preset_is_extrapolated": subset,
        "full_preset_cpu_s": round(total_cpu, 1),
        "dedicated_wall_lower_s": round(total_cpu / max(args.threads, jobs * full.threads_per_job), 1),
        "target_s": TARGET_S,
        "ratio_to_target": round(total / TARGET_S, 3),
        "runs": times,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "work_dir": str(work),
    }
    print(
        f"reproduce --preset {args.preset}: wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min "
        f"({jobs} job(s) x {full.threads_per_job} thread(s); main process {args.threads})"
    )
    for name, t in times.items():
        print(
            f"  {name:16s} train {t['train_s']:7.1f} s ({t['train_cpu_s']:7.1f} CPU s)   "
            f"eval {t['eval_s']:7.1f} s ({t['eval_cpu_s']:7.1f} CPU s)"
        )
    kind = "extrapolated" if subset else "measured"
    print(f"full preset ({kind}): {total / 60:.1f} min = {total / TARGET_S:.2f} x the 90-minute target")
    print(
        f"full preset CPU time ({kind}): {total_cpu / 60:.1f} min; "
        f"at least {result['dedicated_wall_lower_s'] / 60:.1f} min wall on dedicated cores"
    )
    print(
        f"load average before/after: {load_before[0]:.1f} / {result['loadavg_after'][0]:.1f} on {os.cpu_count()} CPUs"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reproduce.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
