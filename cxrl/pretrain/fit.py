"""The one fit loop of ``cxrl pretrain``: index batches in, one optimiser step per batch, losses out.

Every pretraining command (posture, diagnostic, CXR-CLIP, the generator's VAE and denoiser) names
its batches, its loss on a batch and its optimiser; :func:`fit` runs the steps (zero grad, backward,
optional gradient clipping, optimiser and scheduler step, an optional hook such as an EMA update),
stops at ``max_steps`` or a time budget, shows a progress bar and logs the loss.

Batches are drawn lazily, one at a time, so a loss that draws from the same random generator
(augmentations) interleaves with the batch order exactly as a hand-written loop would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

Batch = tuple[int, torch.Tensor]  # (epoch, index batch [b])


@dataclass
class FitResult:
    steps: int  # optimiser steps taken
    losses: list[float] = field(default_factory=list)  # one per step
    epoch_losses: list[float] = field(default_factory=list)  # mean loss of each (started) epoch


def shuffled_batches(n: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch of index batches (the last partial batch is dropped when n > batch)."""
    order = torch.randperm(n, generator=generator)
    usable = n - n % batch if n > batch else n
    return list(order[:usable].split(batch))


def epoch_batches(n: int, batch: int, generator: torch.Generator, epochs: int) -> Iterator[Batch]:
    """``epochs`` shuffled passes over ``n`` items; each epoch's order is drawn when it starts."""
    for epoch in range(epochs):
        for idx in shuffled_batches(n, batch, generator):
            yield epoch, idx


def random_batches(n: int, batch: int, generator: torch.Generator) -> Iterator[Batch]:
    """Endless batches of ``batch`` indices drawn with replacement (step-based training)."""
    while True:
        yield 0, torch.randint(n, (batch,), generator=generator)


def one_cycle(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, total_steps: int, pct_start: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a one-cycle learning rate over ``total_steps`` (the reward models' recipe)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(total_steps, 1), pct_start=pct_start
    )
    return opt, sched


def warmup(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, warmup_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a linear warm-up to ``lr`` over ``warmup_steps``, then constant (the generator's)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))
    return opt, sched


def total_steps(n: int, batch: int, epochs: int, max_steps: int | None, generator: torch.Generator) -> int:
    """Steps of ``epochs`` passes, capped by ``max_steps``. Draws one epoch's order from ``generator``
    to count its batches, as the committed checkpoints' runs did."""
    per_epoch = len(shuffled_batches(n, batch, generator))
    return per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs)


def fit(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],  # index batch [b] -> scalar loss
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    max_steps: int,
    *,
    clip_norm: float | None = None,  # clip the optimiser's parameters' gradient norm to this
    after_step: Callable[[int], None] | None = None,  # called with the step index after each step
    time_budget_s: float | None = None,  # stop (before a step) once this much time has passed
    name: str = "train",  # progress bar and log label
    log_every: int = 100,  # steps between loss lines when training is step-based (one epoch)
) -> FitResult:
    """Run at most ``max_steps`` optimiser steps over ``batches``; returns the loss history."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    result = FitResult(steps=0)
    deadline = None if time_budget_s is None else time.monotonic() + time_budget_s
    epoch, epoch_start = 0, 0
    bar = tqdm(total=max_steps, desc=name, disable=None)
    batch_iter = iter(batches)
    try:
        while result.steps < max_steps:
            if deadline is not None and time.monotonic() > deadline:
                log.info("%s: time budget reached after %d steps", name, result.steps)
                break
            try:
                batch_epoch, idx = next(batch_iter)
            except StopIteration:
                break
            if batch_epoch != epoch:
                _end_epoch(result, name, epoch, epoch_start)
                epoch, epoch_start = batch_epoch, result.steps
            loss = loss_fn(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step(result.steps)
            result.losses.append(loss.item())
            result.steps += 1
            bar.update(1)
            if result.steps % log_every == 0 and epoch == 0:
                tail = result.losses[-log_every:]
                log.info("%s: step %d/%d, loss %.4f", name, result.steps, max_steps, sum(tail) / len(tail))
    finally:
        bar.close()
    if result.steps > epoch_start:
        _end_epoch(result, name, epoch, epoch_start)
    return result


def _end_epoch(result: FitResult, name: str, epoch: int, start: int) -> None:
    losses = result.losses[start:]
    result.epoch_losses.append(sum(losses) / len(losses))
    log.info("%s: epoch %d step %d loss %.5f", name, epoch, result.steps, result.epoch_losses[-1])
