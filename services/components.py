"""Row operations on ``Components`` batches: concatenate, slice, pick rows, merge models.

The services move Components between batches (micro-batching in a model
replica, policy + anchor sent as one batch, cache hits + misses); these keep
every field's row order aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch

from cxrl.rewards.types import Components

FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Components))
VECTOR_FIELDS: frozenset[str] = frozenset({"psi", "diag_probs"})  # [B, K]; the others are [B]


def cat(parts: Sequence[Components]) -> Components:
    """Concatenate batches along the batch axis (a field is kept only if every part has it)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    out = Components()
    for name in FIELDS:
        values = [getattr(p, name) for p in parts]
        if all(v is not None for v in values):
            setattr(out, name, torch.cat(values, dim=0))
    return out


def take(c: Components, index: slice | Sequence[int] | torch.Tensor) -> Components:
    """Rows ``index`` (a slice or a list of positions) of every present field."""
    if not isinstance(index, slice):
        index = torch.as_tensor(index, dtype=torch.long)
    out = Components()
    for name in FIELDS:
        value = getattr(c, name)
        if value is not None:
            setattr(out, name, value[index])
    return out


def split(c: Components, sizes: Sequence[int]) -> list[Components]:
    """Split a batch into consecutive parts of ``sizes`` rows."""
    out, start = [], 0
    for n in sizes:
        out.append(take(c, slice(start, start + n)))
        start += n
    return out


def merge(parts: Sequence[Components]) -> Components:
    """Union of fields from different models over the same rows (later parts win)."""
    out = Components()
    for part in parts:
        for name in FIELDS:
            value = getattr(part, name)
            if value is not None:
                setattr(out, name, value)
    return out


def rows(c: Components) -> int:
    """Number of rows (0 when no field is set)."""
    for name in FIELDS:
        value = getattr(c, name)
        if value is not None:
            return int(value.shape[0])
    return 0


def row_to_dict(c: Components, i: int) -> dict[str, list[float]]:
    """Row ``i`` as plain floats (for the cache); float32 values survive JSON exactly."""
    out = {}
    for name in FIELDS:
        value = getattr(c, name)
        if value is not None:
            out[name] = value[i].reshape(-1).tolist()
    return out


def from_row_dicts(rows_: Sequence[dict[str, list[float]]], like: dict[str, tuple[int, ...]]) -> Components:
    """Inverse of ``row_to_dict`` for many rows; ``like`` gives each field's per-row shape."""
    out = Components()
    for name, shape in like.items():
        data = torch.tensor([r[name] for r in rows_], dtype=torch.float32)
        setattr(out, name, data.reshape(len(rows_), *shape))
    return out
