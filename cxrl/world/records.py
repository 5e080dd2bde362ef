"""A dataset's unit: one image-report pair (:class:`Record`), as every dataset reader returns it.

:mod:`cxrl.world.dataset` reads the default world's ``metadata.csv`` and :mod:`cxrl.world.mimic`
selects MIMIC-CXR-JPG; both produce these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")


@dataclass
class Record:
    """One image-report pair."""

    id: str
    split: str  # "train" | "test"
    report: str
    view: str  # "PA" | "AP"
    labels: dict[str, int]  # label -> 1 / 0 / -1; absent = not mentioned
    image_path: Path
    posture: tuple[float, ...] | None  # (sx, sy, tx, ty, theta) or None for real data
