"""`cxrl train --workers N`: the one epoch engine, data-parallel under Ray Train's ``TorchTrainer``.

Every worker builds the same run (:func:`trainer.runner.prepare`: policy, reward backend, reports)
and drives :class:`cxrl.rl.engine.Engine` with a :class:`cxrl.rl.parallel.TorchDistributed` group
(gloo on CPUs, NCCL on GPUs): it samples its own share of each epoch's plan (images ``rank, rank +
N, ...``), calls the shared reward services, gathers every worker's rewards so advantages are
normalised over the whole epoch, and sums the LoRA and ACE gradients before each optimiser step.
Rank 0 writes the atomic checkpoint, ``history.jsonl`` and the metrics stream.

:func:`train_distributed` is `cxrl train` with ``scaling.workers`` > 1: the workers train the epochs,
then :func:`trainer.runner.run_training` resumes at the last one and evaluates and reports.

Faults: Ray Train's ``FailureConfig(max_failures)`` restarts the worker group after a worker dies;
each worker resumes from the run's last checkpoint, so no epoch is lost or counted twice (rank 0
cuts ``history.jsonl`` back to the checkpointed epochs first). The evaluation and report follow in
the calling process, as after any resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from cxrl.infra.procs import FateShare
from trainer.config import TrainConfig

log = logging.getLogger(__name__)


def worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: build the run, resume, train the remaining epochs."""
    from cxrl.rl.parallel import TorchDistributed
    from trainer.runner import build_engine, prepare, reconcile_history

    cfg = TrainConfig.model_validate(config["cfg"])
    group = TorchDistributed()
    run = prepare(cfg)
    engine = build_engine(run, group)
    try:
        engine.resume()
        if group.rank == 0:
            reconcile_history(run.run_dir, engine.history)
        group.barrier()
        engine.run()
    finally:
        engine.close()


def train_on_ray(cfg: TrainConfig) -> None:
    """Train ``cfg``'s epochs on ``cfg.scaling.workers`` Ray Train workers (returns when all are done)."""
    import ray

    s = cfg.scaling
    if cfg.run_name is None:
        raise ValueError("a data-parallel run needs a fixed run id (cfg.run_name) shared by its workers")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            if s.address is None and not os.environ.get("RAY_ADDRESS"):
                # a local Ray of our own (not a cluster's, as in a RayJob): it dies with us, even on SIGKILL
                stack.enter_context(FateShare())
            ray.init(address=s.address, include_dashboard=False, log_to_driver=True)
            stack.callback(ray.shutdown)
        _fit(cfg)


def _fit(cfg: TrainConfig) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = cfg.scaling
    threads = cfg.threads or max(1, int(s.cpus_per_worker))
    worker_cfg = cfg.model_copy(update={"threads": threads, "progress": False})
    storage = Path(cfg.out_dir).resolve() / cfg.run_name / "ray"
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": worker_cfg.model_dump(mode="json")},
        torch_config=TorchConfig(backend="nccl" if s.gpus_per_worker > 0 else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=s.workers,
            use_gpu=s.gpus_per_worker > 0,
            resources_per_worker={
                "CPU": s.cpus_per_worker,
                **({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {}),
            },
        ),
        run_config=RunConfig(
            name="train", storage_path=str(storage), failure_config=FailureConfig(max_failures=s.max_failures)
        ),
    )
    log.info(
        "training on %d Ray Train workers (%s CPU, %s GPU each)",
        s.workers,
        s.cpus_per_worker,
        s.gpus_per_worker,
    )
    trainer.fit()


def train_distributed(cfg: TrainConfig):
    """`cxrl train` on ``cfg.scaling.workers`` workers: train on Ray, then evaluate and report here."""
    from trainer.runner import run_id_of, run_training, stop_on_sigterm

    cfg = cfg.model_copy(update={"run_name": run_id_of(cfg)})  # every worker and the evaluation: one run
    with stop_on_sigterm():
        train_on_ray(cfg)
    return run_training(cfg)
