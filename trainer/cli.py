"""`cxrl train`, `cxrl runs` and `cxrl demo`: the trainer service's commands."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cxrl.config import add_set_argument, parse_overrides

log = logging.getLogger(__name__)

RUN_DIRS = ("out/runs", "out/demo/runs")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a generator with CXRL (rewards in-process or over gRPC; Redis cache and metrics)",
        description="Train with CXRL from a trainer config (trainer/configs/*.yaml or a path). A run that "
        "finds a checkpoint in its directory resumes from it.",
    )
    p.add_argument("--config", required=True, help="trainer config: a YAML path or a name in trainer/configs")
    add_set_argument(p, "rewards.url=grpc://127.0.0.1:9000 --set rl.epochs=3")
    p.add_argument("--run-name", default=None, help="run id (reuse one to resume it)")
    p.add_argument("--out-dir", default=None, help="where runs go (default from the config)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-parallel training workers on Ray Train (overrides scaling.workers)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve the epoch metrics for Prometheus on http://127.0.0.1:PORT/metrics "
        "(0: a free port, logged; overrides metrics.port)",
    )
    p.set_defaults(func=run_train)

    r = subparsers.add_parser("runs", help="list training runs with their status and latest metrics")
    r.add_argument("--redis", default=None, help="Redis URL of the run registry (default REDIS_URL)")
    r.add_argument(
        "--dir",
        action="append",
        default=None,
        help=f"without Redis, list run directories under these (default {', '.join(RUN_DIRS)})",
    )
    r.add_argument("--limit", type=int, default=20, help="most recent runs shown")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(func=run_runs)


def run_train(args: argparse.Namespace) -> int:
    from trainer.config import TrainConfig
    from trainer.runner import Stopped, run_training

    extra: dict[str, Any] = {}
    if args.run_name:
        extra["run_name"] = args.run_name
    if args.out_dir:
        extra["out_dir"] = args.out_dir
    if args.workers:
        extra["scaling.workers"] = args.workers  # dotted: the config's other scaling settings stay
    if args.metrics_port is not None:
        extra["metrics.port"] = args.metrics_port  # keeps a --set metrics.host
    cfg = TrainConfig.load(args.config, parse_overrides(args.set) | extra)  # the options over --set
    try:
        if cfg.scaling.workers > 1:
            from trainer.distributed import train_distributed

            result = train_distributed(cfg)
        else:
            result = run_training(cfg)
    except Stopped as exc:
        print(f"{exc}; the last checkpoint is kept: run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM  # the conventional status of a process ended by SIGTERM
    print(format_table(result.evaluation))
    print(f"report: {result.report}")
    return 0


def format_table(evaluation: dict[str, Any]) -> str:
    """The short anchor-vs-CXRL table printed at the end of `cxrl train` and `cxrl demo`."""
    rows = [
        ("reward_total", "combined reward"),
        ("r_align", "r_align"),
        ("auroc", "AUROC"),
        ("clip_similarity", "CXR-CLIP sim."),
        ("fid", "FID"),
        ("msssim", "MS-SSIM"),
    ]
    a, c, diff = evaluation["anchor"], evaluation["cxrl"], evaluation.get("diff") or {}
    k = evaluation.get("samples_per_report", 1)
    lines = [
        f"held-out reports: {evaluation['n_prompts']}" + (f" x {k} seeds" if k > 1 else ""),
        f"{'metric':<16}{'anchor':>10}{'CXRL':>10}   CXRL - anchor, paired [95% bootstrap CI]",
    ]
    for key, label in rows:
        if key not in a and key not in diff:
            continue  # e.g. FID without real test images or with eval.fid_features off
        va, vc, d = a.get(key), c.get(key), diff.get(key) or {}
        cells = "".join(f"{'n/a' if v is None or v != v else f'{v:.4f}':>10}" for v in (va, vc))
        delta = "n/a" if d.get("value") is None else f"{d['value']:+.4f}"
        if d.get("low") is not None:
            delta += f" [{d['low']:+.4f}, {d['high']:+.4f}]"
        lines.append(f"{label:<16}{cells}   {delta}")
    return "\n".join(lines)


def run_runs(args: argparse.Namespace) -> int:
    import os

    from trainer.store import RunStore, connect

    url = args.redis or os.environ.get("REDIS_URL")
    client = connect(url) if url else None
    if client is not None:
        runs = [vars(r) for r in RunStore(client).list_runs(args.limit)]
        source = f"registry at {redact(url)}"
    else:
        runs = scan_run_dirs(args.dir or list(RUN_DIRS))[: args.limit]
        source = "run directories (no Redis: set REDIS_URL or --redis for the registry)"
    if args.json:
        print(json.dumps(runs, indent=1, default=str))
        return 0
    print(f"{len(runs)} run(s) from {source}")
    print(f"{'run':<34}{'status':<12}{'epoch':>6}{'reward':>10}{'kl':>10}  updated (UTC)")
    for r in runs:
        latest = r.get("latest") or {}
        reward, kl = latest.get("policy/total"), latest.get("approx_kl")
        epoch = r.get("epoch")
        print(
            f"{r['run_id']:<34}{r['status']:<12}{'' if epoch is None else epoch + 1:>6}"
            f"{'' if reward is None else f'{reward:.4f}':>10}{'' if kl is None else f'{kl:.2e}':>10}  "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r['updated']))}"
        )
    return 0


def scan_run_dirs(roots: list[str]) -> list[dict[str, Any]]:
    """Runs found on disk: status from their files (eval.json = finished), latest metrics from history."""
    runs = []
    for root in roots:
        for d in Path(root).glob("*/config.yaml"):
            run_dir = d.parent
            history = run_dir / "history.jsonl"
            lines = history.read_text().splitlines() if history.is_file() else []
            latest = json.loads(lines[-1]) if lines else {}
            files = [p for p in (history, run_dir / "eval.json", d) if p.exists()]
            runs.append(
                {
                    "run_id": run_dir.name,
                    "status": "finished" if (run_dir / "eval.json").is_file() else "incomplete",
                    "updated": max(p.stat().st_mtime for p in files),
                    "out_dir": str(run_dir),
                    "epoch": latest.get("epoch"),
                    "latest": latest,
                }
            )
    return sorted(runs, key=lambda r: r["updated"], reverse=True)


def redact(url: str) -> str:
    """A Redis URL fit to print: its password (if any) replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    netloc = user + (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
