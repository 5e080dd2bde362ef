"""Serve autoscaling, exercised: `python -m bench.bench_autoscale [--out DIR]`.

Starts `cxrl serve` with ``services/configs/serve-autoscale.yaml`` (every deployment autoscales
between 1 and 4 replicas of 0.1 CPU, with delays of seconds) on free loopback ports, joins its Ray
cluster as a driver only to read ``serve.status()``, and drives one model application (``posture``
by default) over gRPC ``Predict`` in three phases:

1. idle: one trickle client (a small request every ``--trickle-gap-s``) for ``--idle-s``;
2. load: ``--clients`` more clients in closed loops until ``--min-replicas`` replicas have run for
   ``--hold-s`` (at most ``--load-s`` seconds and ``--max-requests`` requests);
3. cool-down: the trickle alone until the deployment is back to one replica with none starting or
   stopping (at most ``--cooldown-s``).

The trickle runs through all three, so requests are in flight while replicas start and stop. Every
request is sent once (no client retries): any error counts as a lost request. Prints the replica
count over time (one row per change) and writes ``bench_autoscale.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

from cxrl import imaging
from cxrl.client import RewardClient
from services.cli import CONFIG_DIR, METRICS_HOST, loopback_node
from services.models import DEPLOYMENT_NAMES

CONFIG = CONFIG_DIR / "serve-autoscale.yaml"


# -- load --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Tally:
    """Requests answered OK and failed, per phase, and the first few errors."""

    ok: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: list[str] = dataclasses.field(default_factory=list)
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    phase: str = "idle"

    def record(self, seconds: float, error: BaseException | None) -> None:
        with self.lock:
            if error is None:
                self.ok[self.phase] += 1
                self.latencies_s.append(seconds)
            else:
                self.failed[self.phase] += 1
                if len(self.errors) < 10:
                    self.errors.append(f"{type(error).__name__}: {error}"[:300])

    def totals(self) -> tuple[int, int]:
        with self.lock:
            return sum(self.ok.values()), sum(self.failed.values())


class Clients:
    """``n`` threads, each sending one ``Predict`` at a time to ``application`` until stopped,
    ``gap_s`` apart, at most ``max_requests`` between them; every outcome goes to ``tally``."""

    def __init__(
        self,
        target: str,
        application: str,
        images: torch.Tensor,
        n: int,
        gap_s: float,
        max_requests: int,
        tally: Tally,
    ):
        self.target, self.application, self.images = target, application, images
        self.gap_s, self.tally = gap_s, tally
        self.left = max_requests
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def _take(self) -> bool:
        with self._lock:
            self.left -= 1
            return self.left >= 0

    def _loop(self) -> None:
        # retries=0: one attempt per request, so a request the service drops is counted, not hidden
        with RewardClient(self.target, retries=0, timeout_s=120.0) as client:
            while not self.stop_event.is_set() and self._take():
                t0 = time.perf_counter()
                try:
                    client.predict(self.application, self.images)
                    error = None
                except Exception as exc:  # counted as a lost request
                    error = exc
                self.tally.record(time.perf_counter() - t0, error)
                self.stop_event.wait(self.gap_s)

    def start(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=150)

    @property
    def exhausted(self) -> bool:
        return self.left <= 0


# -- replica counts ----------------------------------------------------------------------------
def gcs_address(pids: list[int]) -> str:
    """``IP:PORT`` of the GCS that the raylet among these processes (one `cxrl serve` instance's own
    Ray head) talks to: the GCS itself starts on a port of its choosing, the raylet is told it. The
    host is the raylet's node address: `cxrl serve` makes it 127.0.0.1 and its GCS listens there
    only, while the raylet's ``--gcs-address`` may name the machine's address."""
    for pid in pids:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"/raylet"):
                flags = dict(a.decode().split("=", 1) for a in argv[1:] if a.startswith(b"--") and b"=" in a)
                gcs = flags.get("--gcs-address", "")
                if gcs and not gcs.endswith(":0"):
                    node = flags.get("--node-ip-address") or gcs.rsplit(":", 1)[0]
                    return f"{node}:{gcs.rsplit(':', 1)[1]}"
    raise RuntimeError(f"no raylet with a --gcs-address among processes {pids}")


def replica_counts() -> dict[str, dict]:
    """Per deployment (``app/Deployment``): replicas by state and the deployment's status, from
    ``serve.status()`` (the Serve controller's view)."""
    from ray import serve

    out = {}
    for app_name, app in serve.status().applications.items():
        for dep_name, dep in app.deployments.items():
            states = {str(getattr(s, "value", s)): n for s, n in dep.replica_states.items()}
            out[f"{app_name}/{dep_name}"] = {
                "running": states.get("RUNNING", 0),
                "starting": states.get("STARTING", 0),
                "stopping": states.get("STOPPING", 0),
                "status": str(getattr(dep.status, "value", dep.status)),
            }
    return out


@dataclasses.dataclass
class Plan:
    """How long each phase lasts and how hard the load pushes (see the module docstring)."""

    application: str = "posture"  # the model application driven
    clients: int = 6  # load clients besides the trickle
    batch: int = 16  # images per load request
    size: int = 256  # image side in pixels
    idle_s: float = 5.0  # trickle alone before the load
    trickle_gap_s: float = 0.25  # pause between two trickle requests (2 images each)
    min_replicas: int = 2  # the load phase waits for this many running replicas
    hold_s: float = 8.0  # ... and keeps the load on that long after they run
    load_s: float = 90.0  # the load phase ends after this many seconds regardless
    max_requests: int = 3000  # most load requests in all
    cooldown_s: float = 90.0  # most seconds to wait for the scale-down
    settle_s: float = 3.0  # back at one replica, nothing starting or stopping, for this long
    poll_s: float = 0.5  # serve.status() period


def exercise(target: str, gcs: str, plan: Plan) -> dict:
    """Drive ``plan`` at the service on ``target`` (gRPC), reading replica counts from the Serve
    controller of the Ray cluster at ``gcs``; returns the timeline, the peaks and the request tally."""
    import ray

    deployment = f"{plan.application}/{DEPLOYMENT_NAMES[plan.application]}"
    g = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:  # [n,1,S,S] float in [0,1]
        return imaging.from_uint8(
            torch.randint(0, 256, (n, 1, plan.size, plan.size), generator=g, dtype=torch.uint8)
        )

    tally = Tally()
    trickle = Clients(target, plan.application, images(2), 1, plan.trickle_gap_s, 100_000, tally)
    load = Clients(target, plan.application, images(plan.batch), plan.clients, 0.0, plan.max_requests, tally)
    timeline: list[dict] = []
    others_peak: dict[str, int] = {}
    node = gcs.rsplit(":", 1)[0]
    if node == METRICS_HOST:  # `cxrl serve`'s loopback node: join it as a loopback driver
        loopback_node()
    ray.init(address=gcs, _node_ip_address=node, log_to_driver=False, logging_level="WARNING")
    try:
        t0 = time.monotonic()
        phase_start, reached_at, settled_at = t0, None, None
        trickle.start()
        while True:
            now = time.monotonic()
            counts = replica_counts()
            mine = counts[deployment]
            for name, c in counts.items():
                if name != deployment:
                    others_peak[name] = max(others_peak.get(name, 0), c["running"] + c["starting"])
            ok, failed = tally.totals()
            timeline.append(
                {"t_s": round(now - t0, 2), "phase": tally.phase, **mine, "ok": ok, "failed": failed}
            )
            elapsed = now - phase_start
            if tally.phase == "idle" and elapsed >= plan.idle_s:
                tally.phase, phase_start = "load", now
                load.start()
            elif tally.phase == "load":
                if reached_at is None and mine["running"] >= plan.min_replicas:
                    reached_at = now
                held = reached_at is not None and now - reached_at >= plan.hold_s
                if held or elapsed >= plan.load_s or load.exhausted:
                    load.stop_event.set()  # no new load requests; those in flight still finish
                    tally.phase, phase_start = "cooldown", now
            elif tally.phase == "cooldown":
                if mine["running"] == 1 and not mine["starting"] and not mine["stopping"]:
                    settled_at = settled_at or now
                else:
                    settled_at = None
                if (
                    settled_at is not None and now - settled_at >= plan.settle_s
                ) or elapsed >= plan.cooldown_s:
                    break
            time.sleep(plan.poll_s)
    finally:
        load.stop()
        trickle.stop()
        ray.shutdown()
    return summarise(timeline, tally, plan, deployment, others_peak)


def summarise(timeline: list[dict], tally: Tally, plan: Plan, deployment: str, others_peak: dict) -> dict:
    def first(phase: str, cond=lambda r: True) -> float | None:
        return next((r["t_s"] for r in timeline if r["phase"] == phase and cond(r)), None)

    def span(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else round(end - start, 1)

    load_start, cool_start = first("load"), first("cooldown")
    decided_at = first("load", lambda r: r["running"] + r["starting"] > 1)
    up_at = first("load", lambda r: r["running"] >= plan.min_replicas)
    down_at = first("cooldown", lambda r: (r["running"], r["starting"], r["stopping"]) == (1, 0, 0))
    ok, failed = tally.totals()
    lat = sorted(tally.latencies_s)
    return {
        "deployment": deployment,
        "plan": dataclasses.asdict(plan),
        "replicas_before": timeline[0]["running"] if timeline else None,
        "replicas_peak": max((r["running"] for r in timeline), default=0),
        "replicas_end": timeline[-1]["running"] if timeline else None,
        "seconds_to_upscale_decision": span(load_start, decided_at),  # load began -> a replica starting
        "seconds_to_scale_up": span(load_start, up_at),  # load began -> min_replicas running
        "seconds_to_scale_down": span(cool_start, down_at),  # load ended -> 1 running, none starting/stopping
        "requests_ok": ok,
        "requests_failed": failed,
        "requests_by_phase": {
            p: {"ok": tally.ok[p], "failed": tally.failed[p]} for p in ("idle", "load", "cooldown")
        },
        "latency_median_s": lat[len(lat) // 2] if lat else None,
        "latency_max_s": lat[-1] if lat else None,
        "errors": tally.errors,
        "other_deployments_peak_replicas": others_peak,
        "timeline": timeline,
    }


def format_timeline(result: dict) -> str:
    """One row per change of phase or replica counts, plus the last row."""
    rows = [
        f"{'t (s)':>6}  {'phase':<8} {'running':>7} {'starting':>8} {'stopping':>8}  {'status':<11} {'ok':>5} {'failed':>6}"
    ]
    last_key = None
    timeline = result["timeline"]
    for i, r in enumerate(timeline):
        key = (r["phase"], r["running"], r["starting"], r["stopping"], r["status"])
        if key != last_key or i == len(timeline) - 1:
            rows.append(
                f"{r['t_s']:6.1f}  {r['phase']:<8} {r['running']:7d} {r['starting']:8d} {r['stopping']:8d}  "
                f"{r['status']:<11} {r['ok']:5d} {r['failed']:6d}"
            )
        last_key = key
    return "\n".join(rows)


def format_summary(result: dict) -> str:
    return (
        f"{result['deployment']}: replicas {result['replicas_before']} -> peak {result['replicas_peak']} -> "
        f"{result['replicas_end']}; scale-up decided {result['seconds_to_upscale_decision']} s and "
        f"replicas running {result['seconds_to_scale_up']} s after the load began, back to 1 "
        f"{result['seconds_to_scale_down']} s after it ended; requests {result['requests_ok']} OK, "
        f"{result['requests_failed']} failed; other deployments' peak replicas "
        f"{result['other_deployments_peak_replicas']}"
    )


# -- command -----------------------------------------------------------------------------------
def profile(path: Path, only: list[str] | None = None, source: Path = CONFIG) -> Path:
    """Write the autoscaling profile to ``path``, keeping only the applications ``only`` names."""
    data = yaml.safe_load(source.read_text())
    if only:
        unknown = set(only) - {a["name"] for a in data["applications"]}
        if unknown:
            raise ValueError(f"{source} has no application(s) {sorted(unknown)}")
        data["applications"] = [a for a in data["applications"] if a["name"] in only]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(plan: Plan, config: Path, nice: int = 0) -> dict:
    """Start `cxrl serve` with ``config`` (2 CPUs for Ray, no score cache), exercise ``plan`` on it,
    stop it; the result also says how long the service took to start and whether it stopped cleanly."""
    from cxrl.infra.serve_process import ServeProcess

    t0 = time.monotonic()
    # no REDIS_URL: no score cache, so every request reaches a replica. Unauthenticated, as the
    # tests' `cxrl serve` fixture runs it: a loopback exercise on a machine nobody else reaches.
    env = {"REDIS_URL": None, "CXRL_ALLOW_UNAUTHENTICATED": "1"}
    with ServeProcess(config, num_cpus=2, env=env, nice=nice) as serve:
        ready_s = time.monotonic() - t0
        print(f"cxrl serve ({config.name}) ready in {ready_s:.0f} s", flush=True)
        result = exercise(serve.grpc_target, gcs_address(serve.processes()), plan)
    result.update(
        config=str(config),
        serve_ready_s=round(ready_s, 1),
        stopped_cleanly=serve.stopped_cleanly,
        serve_log_tail="" if serve.stopped_cleanly else serve.log_tail(3000),
        wall_s=round(time.monotonic() - t0, 1),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for bench_autoscale.json")
    p.add_argument("--config", type=Path, default=CONFIG, help=f"serve config (default {CONFIG})")
    p.add_argument("--only", nargs="+", default=None, help="start only these applications of the config")
    defaults = Plan()
    for name, value in vars(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = p.parse_args(argv)
    plan = Plan(**{k: getattr(args, k) for k in vars(defaults)})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service on the way out
    with tempfile.TemporaryDirectory(prefix="cxrl-autoscale-") as tmp:
        config = profile(Path(tmp) / args.config.name, args.only, args.config) if args.only else args.config
        result = run(plan, config)
    result.update(cpus=os.cpu_count(), load_average_end=os.getloadavg()[0], python=platform.python_version())
    print(format_timeline(result))
    print(format_summary(result))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as fh:
        json.dump(result, fh, indent=1)
    os.replace(fh.name, args.out / "bench_autoscale.json")
    print(f"wrote {args.out / 'bench_autoscale.json'}")
    scaled = result["replicas_peak"] >= plan.min_replicas and result["replicas_end"] == 1
    return 0 if scaled and result["requests_failed"] == 0 and result["stopped_cleanly"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
