"""The engine's view of its data-parallel group (:class:`Group`): one process (:class:`Local`,
:data:`LOCAL`) or torch.distributed (:class:`TorchDistributed`).

Each worker samples the images ``rank, rank + world, ...`` of the epoch's plan; rewards and
reports are gathered so every worker normalises advantages over the whole epoch; the gradients of
the trainable parameters are summed over workers before each optimiser step (each worker's loss is
already weighted by its share of the minibatch, so the sum is the whole minibatch's gradient).
Under Ray Train's ``TorchTrainer`` the process group is set up before the engine starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch


class Group(ABC):
    """A data-parallel group of training workers: this worker's ``rank``, the ``world`` size, and the
    collectives the engine calls (every worker calls each one, in the same order)."""

    rank: int
    world: int

    def share(self, n: int) -> list[int]:
        """Indices of the ``n`` planned images this worker samples and trains on."""
        return list(range(self.rank, n, self.world))

    @abstractmethod
    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, by rank."""

    @abstractmethod
    def sum_(self, values: np.ndarray) -> np.ndarray:
        """``values`` summed element-wise over the workers."""

    @abstractmethod
    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum each parameter's gradient over the workers (in place)."""

    @abstractmethod
    def barrier(self) -> None:
        """Wait for every worker."""


class Local(Group):
    """A group of one (this process): every collective is the identity."""

    rank = 0
    world = 1

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def sum_(self, values: np.ndarray) -> np.ndarray:
        return values

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        pass

    def barrier(self) -> None:
        pass


class TorchDistributed(Group):
    """The default torch.distributed process group (gloo on CPU, NCCL on GPUs)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; run under Ray Train's TorchTrainer")
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def sum_(self, values: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
        self.dist.all_reduce(t)
        return t.numpy()

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce for all adapters
        self.dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def barrier(self) -> None:
        self.dist.barrier()


LOCAL = Local()  # the group of a run in one process
