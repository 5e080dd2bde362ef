"""Anchor stores: the frozen anchor's image and reward components per (report, noise seed).

One interface, :class:`AnchorStore`, and one base, :class:`CountedStore`, for every store: in memory
(:class:`MemoryAnchorStore`), on disk (:class:`DirAnchorStore`, shared by the runs of one machine)
and in Redis (``trainer.anchor_cache.AnchorCache``, the trainer service's). The base does what they
share: hit/miss counting over a store's own ``_lookup`` of (report, seed) pairs, and the checks of a
``put_many``. Every component row goes through :func:`cxrl.rewards.types.valid_row`, the score
cache's check too: a non-finite or malformed row is never stored (it is logged, and that anchor is
sampled again next time) and never served (read back, it is a miss).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cxrl import imaging
from cxrl.infra.fileio import atomic_write_bytes
from cxrl.rewards.types import Components, Row, valid_row

log = logging.getLogger(__name__)


@dataclass
class AnchorEntry:
    """One stored anchor sample."""

    image: torch.Tensor  # [1, H, W] float in [0, 1] (8-bit precision in Redis)
    components: Row  # per-image slice of Components; absent = not computed


class AnchorStore(Protocol):
    """Where anchor samples are kept (see the module docstring for the stores)."""

    hits: int
    misses: int

    def get_many(
        self, reports: Sequence[str], seeds: Sequence[int], count: bool = True
    ) -> list[AnchorEntry | None]:
        """One entry per (report, seed), None where not stored; ``count`` adds to hits/misses."""
        ...

    def put_many(
        self, reports: Sequence[str], seeds: Sequence[int], images: torch.Tensor, components: Components
    ) -> None: ...


class CountedStore:
    """The shared part of the stores: counted ``get_many`` over ``_lookup``, and checked puts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _lookup(self, pairs: list[tuple[str, int]]) -> list[AnchorEntry | None]:
        raise NotImplementedError

    def get_many(
        self, reports: Sequence[str], seeds: Sequence[int], count: bool = True
    ) -> list[AnchorEntry | None]:
        if len(reports) != len(seeds):
            raise ValueError(f"got {len(reports)} reports and {len(seeds)} seeds; give one seed per report")
        out = self._lookup([(r, int(s)) for r, s in zip(reports, seeds, strict=True)])
        if count:
            with self._lock:
                n_hit = sum(e is not None for e in out)
                self.hits += n_hit
                self.misses += len(out) - n_hit
        return out

    def _storable(
        self, reports: Sequence[str], seeds: Sequence[int], images: torch.Tensor, components: Components
    ) -> list[tuple[str, int, torch.Tensor, Row]]:
        """What ``put_many`` stores: one (report, seed, image, row) per anchor, its row valid."""
        imaging.validate(images, "anchor images")
        if not len(reports) == len(seeds) == images.shape[0] == components.num_rows:
            raise ValueError(
                f"got {len(reports)} reports, {len(seeds)} seeds, {images.shape[0]} images and "
                f"{components.num_rows} component rows; give one of each per anchor"
            )
        out, bad = [], []
        for r, s, img, row in zip(reports, seeds, images, components.to_rows(), strict=True):
            (out if valid_row(row) is not None else bad).append((r, int(s), img, row))
        if bad:
            log.warning(
                "%s: %d anchor row(s) not stored (not finite or malformed, e.g. %s); sampled again when next needed",
                type(self).__name__,
                len(bad),
                bad[0][3],
            )
        return out


class MemoryAnchorStore(CountedStore):
    """Anchor samples in this process (thread-safe), kept at full precision."""

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[tuple[str, int], AnchorEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _lookup(self, pairs: list[tuple[str, int]]) -> list[AnchorEntry | None]:
        with self._lock:
            return [self._entries.get(pair) for pair in pairs]

    def put_many(
        self, reports: Sequence[str], seeds: Sequence[int], images: torch.Tensor, components: Components
    ) -> None:
        items = self._storable(reports, seeds, images, components)
        with self._lock:
            for r, s, img, row in items:
                self._entries[(r, s)] = AnchorEntry(img.detach().cpu(), row)


class DirAnchorStore(CountedStore):
    """Anchor samples as files under ``root/<version>/``, shared by processes (runs of one machine).

    Each (report, seed) is one ``.npz`` (the image in float32 and its JSON component row, no
    pickles), written atomically, so concurrent writers of the same pair leave one whole file. The
    directory is named by :func:`cxrl.rl.versioning.anchor_version`: a change of generator, sampler or
    reward models starts an empty one. An entry that cannot be read, holds an invalid row or lacks
    a component of ``fields``, is a miss.
    """

    def __init__(self, root: str | Path, version: str, fields: Sequence[str] = ()):
        if not version:
            raise ValueError("version must name the generator, sampling settings and reward models")
        super().__init__()
        self.dir = Path(root) / version
        self.fields = tuple(fields)  # components every usable entry must hold

    def path(self, report: str, seed: int) -> Path:
        digest = hashlib.sha256(json.dumps([report, int(seed)], ensure_ascii=False).encode()).hexdigest()
        return self.dir / digest[:2] / f"{digest}.npz"

    def _read(self, report: str, seed: int) -> AnchorEntry | None:
        path = self.path(report, seed)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                image = torch.from_numpy(np.array(data["image"], dtype=np.float32))
                row = valid_row(bytes(data["row"]))
            imaging.validate(image[None], "stored anchor image")
            if row is None:
                raise ValueError("its component row is not finite or malformed")
        except Exception as exc:  # a damaged file is sampled again and overwritten
            log.warning(
                "anchor file %s unreadable (%s: %s); sampling it again", path, type(exc).__name__, exc
            )
            return None
        if any(f not in row for f in self.fields):
            return None
        return AnchorEntry(image, row)

    def _lookup(self, pairs: list[tuple[str, int]]) -> list[AnchorEntry | None]:
        return [self._read(r, s) for r, s in pairs]

    def put_many(
        self, reports: Sequence[str], seeds: Sequence[int], images: torch.Tensor, components: Components
    ) -> None:
        for r, s, img, row in self._storable(reports, seeds, images, components):
            buf = io.BytesIO()
            np.savez(
                buf,
                image=img.detach().to("cpu", torch.float32).numpy(),
                row=np.frombuffer(json.dumps(row).encode(), dtype=np.uint8),
            )
            atomic_write_bytes(self.path(r, s), buf.getvalue())
