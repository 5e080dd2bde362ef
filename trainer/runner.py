"""One training run from a TrainConfig: build, train, evaluate, report (`cxrl train` and `cxrl demo`).

Run directory ``OUT_DIR/<run id>/``: ``config.yaml``, ``checkpoints/`` (atomic, resumable),
``history.jsonl``, ``grids/epoch-NNNNNN/`` (the held-out image grids), ``eval.json`` and
``report.html``. A run that finds a checkpoint in its directory resumes from it, exactly:

- what a kill left of an unfinished checkpoint write is removed, and ``history.jsonl`` is cut back
  to the checkpointed epochs (an epoch logged after the last checkpoint is trained again);
- a corrupt latest checkpoint stops the run with :class:`cxrl.rl.checkpoint.CheckpointError`, which
  names the file and how to fall back to the previous checkpoint; it never trains from scratch;
- a finished and evaluated run (same epochs, same evaluation settings) is left as it is.

Redis calls go through a :class:`~cxrl.infra.redis_guard.RedisGuard`: an outage costs the anchor cache
and delays the metrics stream, never the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from cxrl import imaging
from cxrl.eval import heldout
from cxrl.eval.evaluate import Evaluator, feature_model
from cxrl.eval.heldout import Prompt, split_reports
from cxrl.infra.fileio import atomic_write_bytes
from cxrl.infra.redis_guard import RedisGuard
from cxrl.rewards.types import RewardBackend
from cxrl.rl.anchor_ahead import AnchorAhead
from cxrl.rl.config import CXRLConfig
from cxrl.rl.engine import Engine
from cxrl.rl.frozen_anchor import FrozenAnchor
from cxrl.rl.parallel import LOCAL, Group
from cxrl.rl.policy import Policy, fitting_reports, make_policy
from cxrl.rl.run import Wiring, build
from cxrl.rl.sinks import HistoryFile, LogLine, ProgressBar, Sink, TensorBoard
from cxrl.rl.versioning import sampler_version
from trainer.anchor_cache import AnchorCache
from trainer.config import RewardClientSettings, TrainConfig
from trainer.metrics import metrics_sink
from trainer.prompts import choose
from trainer.report import EvalGrid, write_report
from trainer.store import RunStore

log = logging.getLogger(__name__)


class Stopped(Exception):
    """SIGTERM arrived (e.g. a Kubernetes eviction): the run stops; its last checkpoint resumes it exactly."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`Stopped` in the main thread while training (else leave signals alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    history: list[dict[str, Any]]
    evaluation: dict[str, Any]
    report: Path
    grids: list[EvalGrid] = field(default_factory=list)


def build_backend(settings: RewardClientSettings, weights: dict[str, float]) -> RewardBackend:
    """The reward backend in direct mode (the engine forms RLCF totals itself)."""
    if settings.url == "inprocess":
        from cxrl.rewards.backend import InProcessRewards
        from cxrl.rewards.factory import build_scorers

        posture, diagnostic, consistency = build_scorers(settings.models)
        return InProcessRewards(posture, diagnostic, consistency, weights=weights, rlcf=False)
    from cxrl.client import RewardClient

    return RewardClient.from_url(
        settings.url,
        token=os.environ.get(settings.token_env) or None,
        weights=weights,
        timeout_s=settings.timeout_s,
        retries=0,  # the engine retries transient failures (rewards.retries); one layer, not two
        backoff_s=settings.backoff_s,
    )


def save_grid(run_dir: Path, grid: EvalGrid) -> None:
    d = run_dir / "grids" / f"epoch-{grid.epoch:06d}"
    d.mkdir(parents=True, exist_ok=True)
    for i, (a, p) in enumerate(zip(grid.anchor_png, grid.policy_png, strict=True)):
        atomic_write_bytes(d / f"anchor-{i}.png", a)
        atomic_write_bytes(d / f"policy-{i}.png", p)
    atomic_write_bytes(d / "reports.json", json.dumps(grid.reports).encode())


def load_grids(run_dir: Path) -> list[EvalGrid]:
    grids = []
    for d in sorted((run_dir / "grids").glob("epoch-*")):
        if not (d / "reports.json").is_file():
            continue
        reports = json.loads((d / "reports.json").read_text())
        n = range(len(reports))
        grids.append(
            EvalGrid(
                int(d.name.split("-")[1]),
                reports,
                [(d / f"anchor-{i}.png").read_bytes() for i in n],
                [(d / f"policy-{i}.png").read_bytes() for i in n],
            )
        )
    return grids


@dataclass
class Run:
    """Everything a training run is built from (the same in every data-parallel worker)."""

    cfg: TrainConfig
    rl: CXRLConfig
    run_id: str
    run_dir: Path
    policy: Policy
    backend: RewardBackend
    train: list[str]  # training reports
    held_out: list[Prompt]  # evaluation reports (with their real images where the data has them)
    guard: RedisGuard | None
    registry: RunStore | None  # the run registry and metrics stream in Redis
    cache: AnchorCache | None

    @property
    def retries(self) -> int:
        return self.cfg.rewards.call_retries


def run_id_of(cfg: TrainConfig) -> str:
    return cfg.run_name or f"{Path(cfg.preset).stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def prepare(
    cfg: TrainConfig,
    policy: Policy | None = None,
    backend: RewardBackend | None = None,
    prompts: tuple[list[str], list[str]] | None = None,
    gen_id: str | None = None,
) -> Run:
    """Policy, reward backend, reports, Redis stores of a run. Objects may be injected (tests)."""
    rl = cfg.rl_config()
    if unused := cfg.rewards.unused():
        log.warning(
            "%s set but not used: rewards.url is inprocess, where reward calls have no deadline and are "
            "never retried (an error would repeat); they apply to a grpc:// or grpcs:// rewards.url",
            ", ".join(f"rewards.{name}={getattr(cfg.rewards, name)!r}" for name in unused),
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_id = run_id_of(cfg)
    run_dir = Path(cfg.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    guard = RedisGuard.open(
        cfg.redis.resolved_url(),
        retry_s=cfg.redis.retry_s,
        purpose="the anchor cache, the metrics stream and the run registry",
        impact="training goes on uncached: anchors are sampled in line, metrics wait for Redis to come back",
    )
    registry = RunStore(guard.client, prefix=cfg.redis.prefix, guard=guard) if guard else None
    policy = policy or make_policy(rl)
    backend = backend or build_backend(cfg.rewards, rl.rewards.weights)
    train, test = prompts or split_reports(rl.data)
    train = choose(fitting_reports(policy, train, rl.max_report_tokens), cfg.train_prompts, rl.seed)
    test = fitting_reports(policy, test, rl.max_report_tokens)
    held_out = heldout.held_out(test, cfg.eval, rl.data)
    cache = None
    if guard is not None:
        version = sampler_version(rl.generator, rl.sampling, backend.info(), gen_id)
        cache = AnchorCache(
            guard.client, version, prefix=cfg.redis.prefix, ttl_s=cfg.redis.anchor_ttl_s, guard=guard
        )
    return Run(cfg, rl, run_id, run_dir, policy, backend, train, held_out, guard, registry, cache)


def wiring(cfg: TrainConfig) -> Wiring:
    """What a trainer run names: the seed-bank plan and how reward calls are made (its anchor store
    is the Redis cache, passed to the builder)."""
    r = cfg.rewards
    return Wiring(
        plan="seed-bank",
        seed_bank=cfg.seed_bank,
        max_in_flight=r.max_in_flight,
        retries=r.call_retries,  # in-process errors would repeat (0 retries); gRPC ones may not
        backoff_s=r.backoff_s,
    )


def build_engine(run: Run, group: Group = LOCAL) -> Engine:
    """The engine of a run (:func:`cxrl.rl.run.build`): Redis anchor cache, log line, history file, metrics stream."""
    sinks: list[Sink] = [LogLine(run.rl.epochs), HistoryFile(run.run_dir / "history.jsonl")]
    if run.registry is not None:
        sinks.append(RedisMetrics(run.registry, run.run_id))
    built = build(
        run.rl,
        run.train,
        run.backend,
        policy=run.policy,
        wiring=wiring(run.cfg),
        run_dir=run.run_dir,
        anchors=run.cache,
        sinks=sinks,
        group=group,
    )
    return built.engine


def run_training(
    cfg: TrainConfig,
    policy: Policy | None = None,
    backend: RewardBackend | None = None,
    prompts: tuple[list[str], list[str]] | None = None,
    gen_id: str | None = None,
) -> RunResult:
    """Train (or resume), evaluate on held-out reports, write the report. Objects may be injected (tests).

    After data-parallel workers trained the epochs (:func:`trainer.distributed.train_distributed`),
    this resumes at the last epoch and only evaluates and reports.
    """
    cfg = cfg.model_copy(update={"run_name": run_id_of(cfg)})
    run = prepare(cfg, policy, backend, prompts, gen_id)
    atomic_write_bytes(run.run_dir / "config.yaml", cfg.to_yaml().encode())
    rl, run_id, registry = run.rl, run.run_id, run.registry
    log.info(
        "run %s in %s: %d training reports, %d held-out reports",
        run_id,
        run.run_dir,
        len(run.train),
        len(run.held_out),
    )
    progress = cfg.progress and os.isatty(2)
    engine = build_engine(run)
    if (metrics := metrics_sink(cfg.metrics, run_id)) is not None:  # the run's /metrics (trainer.metrics)
        engine.sinks.append(metrics)
    frozen = FrozenAnchor(run.policy) if cfg.anchor_ahead else None
    evaluator = Evaluator(
        cfg.eval,
        run.held_out,
        rl.sampling,
        run.backend,
        rl.rewards.weights,
        run.policy,
        feature_model(run.backend, cfg.eval.fid_features, cfg.rewards.models),  # over gRPC: loaded here
        frozen,
        cfg.eval.grid_prompts,
        run.retries,
        cfg.rewards.backoff_s,
    )
    if frozen is not None:
        engine.ahead = AnchorAhead(
            engine.plan, frozen, run.backend, run.cache, rl.sampling, engine.spec, evaluator.anchor
        )
    if registry:
        registry.register(run_id, str(run.run_dir), cfg.model_dump(mode="json"))
    try:
        with logging_redirect_tqdm(), stop_on_sigterm():
            result = _train_and_evaluate(cfg, rl, engine, evaluator, run.run_dir, run_id, progress)
    except (KeyboardInterrupt, Stopped) as exc:
        # the epoch in progress is abandoned: the last checkpoint resumes the run exactly
        log.warning(
            "run %s %s at epoch %d; run the same command again to resume",
            run_id,
            "stopped" if isinstance(exc, Stopped) else "interrupted",
            engine.epoch,
        )
        if registry:
            registry.set_status(run_id, "stopped" if isinstance(exc, Stopped) else "interrupted")
        raise
    except BaseException as exc:
        if registry:
            registry.set_status(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        engine.close()
    if registry:
        registry.set_status(run_id, "finished")
    return result


class RedisMetrics(Sink):
    """The run's metrics stream in Redis (one entry per epoch)."""

    def __init__(self, registry: RunStore, run_id: str):
        self.registry, self.run_id = registry, run_id

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.registry.add_metrics(self.run_id, metrics["epoch"], metrics)


class GridSnapshots(Sink):
    """Held-out policy vs anchor grids: at the start, every ``every`` epochs, and at the end."""

    def __init__(
        self, run_dir: Path, evaluator: Evaluator, n: int, every: int, epochs: int, sinks: list[Sink]
    ):
        self.run_dir, self.evaluator, self.n, self.every, self.epochs = run_dir, evaluator, n, every, epochs
        self.sinks = sinks  # also shown by the sinks that show images (TensorBoard)
        self.grids = load_grids(run_dir)

    def snapshot(self, epoch: int) -> None:
        if self.n and not any(g.epoch == epoch for g in self.grids):
            grid = self.evaluator.grid(epoch)
            save_grid(self.run_dir, grid)
            self.grids.append(grid)
            anchor = torch.stack([imaging.decode_png(b) for b in grid.anchor_png])
            policy = torch.stack([imaging.decode_png(b) for b in grid.policy_png])
            for sink in self.sinks:
                sink.grid(epoch, grid.reports, anchor, policy)

    def epoch(self, metrics: dict[str, Any]) -> None:
        done = metrics["epoch"] + 1
        if self.every and done % self.every == 0 and done < self.epochs:
            self.snapshot(done)


def _train_and_evaluate(
    cfg: TrainConfig,
    rl: CXRLConfig,
    engine: Engine,
    evaluator: Evaluator,
    run_dir: Path,
    run_id: str,
    progress: bool,
) -> RunResult:
    engine.resume()
    reconcile_history(run_dir, engine.history)  # without a checkpoint: no epoch is done, none logged
    eval_settings = cfg.eval.model_dump(mode="json")
    done = _finished(run_dir, engine.epoch, rl.epochs, eval_settings)
    if done is not None:
        log.info("run %s has done its %d epochs and was evaluated: nothing to do", run_id, rl.epochs)
        return RunResult(run_id, run_dir, engine.history, done, run_dir / "report.html", load_grids(run_dir))
    board = TensorBoard(run_dir / "tensorboard")
    grids = GridSnapshots(run_dir, evaluator, cfg.eval.grid_prompts, cfg.eval.every, rl.epochs, [board])
    engine.sinks += [board, grids, ProgressBar(rl.epochs, engine.epoch, f"CXRL {run_id}", progress)]
    grids.snapshot(engine.epoch)
    t0 = time.perf_counter()
    engine.run()
    train_s = time.perf_counter() - t0
    grids.snapshot(engine.epoch)
    t0 = time.perf_counter()
    evaluation = evaluator.evaluate()
    evaluation["eval_seconds"] = time.perf_counter() - t0
    evaluation["train_seconds"] = train_s
    if engine.ahead is not None:
        evaluation["anchor_ahead_sampled"] = engine.ahead.sampled
    evaluation["epochs"] = engine.epoch
    evaluation["eval_settings"] = eval_settings
    atomic_write_bytes(run_dir / "eval.json", json.dumps(evaluation, indent=1).encode())
    final = {k: evaluation[k] for k in ("anchor", "cxrl")}
    final["cxrl - anchor (paired, 95% CI)"] = {k: _ci_text(d) for k, d in evaluation["diff"].items()}
    report = write_report(
        run_dir / "report.html",
        title=f"CXRL run {run_id}",
        history=engine.history,
        grids=sorted(grids.grids, key=lambda g: g.epoch),
        final=final,
        meta={
            "run": run_id,
            "preset": cfg.preset,
            "epochs": rl.epochs,
            "images per epoch": rl.sampling.images_per_epoch,
            "DDIM steps": rl.sampling.num_steps,
            "reward weights": rl.rewards.weights,
            "RLCF": rl.rewards.rlcf,
            "held-out reports": evaluation["n_prompts"],
            "reward_total cxrl - anchor (paired, 95% bootstrap CI)": _ci_text(
                evaluation["diff"]["reward_total"]
            ),
        },
    )
    log.info("report: %s", report)
    return RunResult(run_id, run_dir, engine.history, evaluation, report, grids.grids)


def reconcile_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Make ``history.jsonl`` one line per checkpointed epoch, after a resume.

    A kill can leave lines of epochs after the checkpoint (they are trained again, and would be
    logged twice), a line cut short, or miss the line of the checkpointed epoch. Lines that agree
    with the checkpoint's history but for wall times are kept as they are; the rest is rewritten
    from the checkpoint.
    """
    path = run_dir / "history.jsonl"
    logged: dict[int, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                logged[int(entry["epoch"])] = line
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill
    lines = []
    for m in history:
        line = logged.get(int(m["epoch"]))
        entry = json.loads(line) if line else {}
        # wall times may differ (the line has the checkpoint's own time, the checkpoint cannot)
        agrees = line is not None and all(
            entry.get(k) == v for k, v in m.items() if not k.startswith("time/")
        )
        lines.append(line if agrees else json.dumps(m))
    text = "".join(line + "\n" for line in lines)
    old = path.read_text() if path.is_file() else ""
    if text != old:
        atomic_write_bytes(path, text.encode())
        log.info(
            "history.jsonl: %d epoch(s) as checkpointed (was %d line(s))", len(lines), len(old.splitlines())
        )


def _finished(run_dir: Path, epoch: int, epochs: int, eval_settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored evaluation of a run that has done ``epochs`` and was evaluated with these settings."""
    path = run_dir / "eval.json"
    if epoch < epochs or not path.is_file() or not (run_dir / "report.html").is_file():
        return None
    try:
        evaluation = json.loads(path.read_text())
    except ValueError:
        return None
    same = evaluation.get("epochs") == epoch and evaluation.get("eval_settings") == eval_settings
    return evaluation if same else None


def _ci_text(d: dict[str, Any]) -> str:
    if d.get("value") is None:
        return "n/a"
    if d.get("low") is None:
        return f"{d['value']:.4f}"
    return f"{d['value']:.4f} [{d['low']:.4f}, {d['high']:.4f}]"
