"""Where an epoch's metrics go: one log line, ``history.jsonl``, a progress bar, TensorBoard.

The engine hands every finished epoch's metrics (one flat dict, the names below) to each of its
sinks, and the held-out image grids to those that show images. The trainer service adds its Redis
metrics stream as one more sink.

Metric names (the same in history, Redis, TensorBoard and the run report):
``epoch``, ``global_step``; ``policy/<c>`` and ``anchor/<c>`` for c in r_align, diag_acc,
consistency and total; ``reward_std``; ``loss``, ``approx_kl``, ``clipfrac``, ``kl`` (the
regulariser's, 0 when off), ``grad_norm``; ``cache_hit_rate`` (with an anchor store);
``reward_retries``; ``time/<phase>`` for the phases in :data:`PHASES` (``comm``: gathering rewards
and summing gradients across data-parallel workers) and ``time/epoch``, the epoch's wall time.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
PHASES = ("sample", "anchor", "score", "score_wait", "train", "comm", "checkpoint")


class Sink:
    """An epoch sink; every method is optional."""

    def epoch(self, metrics: dict[str, Any]) -> None:
        """A finished epoch's metrics."""

    def grid(self, epoch: int, reports: list[str], anchor: torch.Tensor, policy: torch.Tensor) -> None:
        """Held-out policy vs anchor images ``[n, 1, H, W]`` (same reports and noise) after ``epoch`` epochs."""

    def close(self) -> None:
        """The run ends (normally or not)."""


def format_epoch_line(m: dict[str, Any], epochs: int) -> str:
    """One line per epoch: policy/anchor mean of each component, total, KL, clip, cache, phase times."""

    def pa(name: str, label: str) -> str:
        p, a = m.get(f"policy/{name}"), m.get(f"anchor/{name}")
        if p is None:
            return ""
        return f" {label} {p:.4f}" + (f"/{a:.4f}" if a is not None else "")

    line = f"epoch {m['epoch'] + 1}/{epochs} policy/anchor:"
    line += pa("total", "total") + pa("r_align", "r_align") + pa("diag_acc", "acc") + pa("consistency", "cos")
    line += f" | approx_kl {m['approx_kl']:.2e} clip {m['clipfrac']:.3f}"
    if m.get("kl"):
        line += f" kl {m['kl']:.2e}"
    line += f" | cache hit {100 * m['cache_hit_rate']:.0f}%" if "cache_hit_rate" in m else " | cache off"
    if m.get("reward_retries"):
        line += f" | retries {m['reward_retries']}"
    line += " | time " + " ".join(f"{p} {m.get(f'time/{p}', 0.0):.1f}s" for p in PHASES)
    return line


class LogLine(Sink):
    def __init__(self, epochs: int):
        self.epochs = epochs

    def epoch(self, metrics: dict[str, Any]) -> None:
        log.info("%s", format_epoch_line(metrics, self.epochs))


class HistoryFile(Sink):
    """Appends each epoch as one JSON line (fsynced: a line that was written survives a crash)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class ProgressBar(Sink):
    """A tqdm bar over the run's epochs, with the policy's mean total reward."""

    def __init__(self, epochs: int, start: int, desc: str, enabled: bool = True):
        self.bar = tqdm(total=epochs, initial=start, desc=desc, unit="epoch", disable=not enabled)

    def epoch(self, metrics: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{metrics['policy/total']:.3f}")

    def close(self) -> None:
        self.bar.close()


class TensorBoard(Sink):
    """Standard TensorBoard event files under ``logdir``: every numeric metric, and image grids.

    ``tensorboard --logdir RUN_DIR/tensorboard`` shows a run: scalars under their metric names
    (step = epochs done), grids as ``grid/anchor`` and ``grid/policy`` (one row, same noise).
    """

    def __init__(self, logdir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))

    def epoch(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["epoch"]) + 1
        for name, value in metrics.items():
            if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(name, float(value), step)
        self.writer.flush()

    def grid(self, epoch: int, reports: list[str], anchor: torch.Tensor, policy: torch.Tensor) -> None:
        for name, images in (("anchor", anchor), ("policy", policy)):
            row = torch.cat(list(images.detach().cpu().clamp(0, 1)), dim=-1)  # [1, H, n*W]
            self.writer.add_image(f"grid/{name}", row, epoch)
        self.writer.add_text("grid/reports", "\n\n".join(f"{i}. {r}" for i, r in enumerate(reports)), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
