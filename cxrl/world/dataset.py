"""One reading interface for every dataset directory: the default world and a MIMIC-CXR-JPG selection.

A dataset directory holds ``metadata.csv`` with at least the columns ``id``, ``split``,
``image`` (path relative to the directory, or absolute), ``report``, ``view``, one column
per label (``cxrl.labels.column_name``; 1 / 0 / -1, empty when not mentioned) and the
posture ``sx, sy, tx, ty, theta`` (empty for real radiographs). ``cxrl world build``
writes such a directory; ``cxrl world mimic`` writes one whose images stay in the MIMIC
tree. ``load_records`` also accepts a MIMIC-CXR-JPG root directly (it then applies the
paper's selection with the default seed, see ``cxrl.world.mimic``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cxrl.imaging import load_image, resize
from cxrl.labels import LABELS, column_name, validate_labels
from cxrl.world.posture import PSI_NAMES
from cxrl.world.records import SPLITS, Record

REQUIRED_COLUMNS = ("id", "split", "image", "report", "view")


def _parse_row(row: dict[str, str], base: Path, where: str) -> Record:
    labels = {}
    for label in LABELS:
        cell = (row.get(column_name(label)) or "").strip()
        if cell:
            try:
                labels[label] = int(float(cell))
            except ValueError as exc:
                raise ValueError(
                    f"{where}: label {label!r} has value {cell!r}; expected 1, 0, -1 or empty"
                ) from exc
    try:
        validate_labels(labels)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    cells = [(row.get(n) or "").strip() for n in PSI_NAMES]
    if all(cells):
        try:
            posture = tuple(float(c) for c in cells)
        except ValueError as exc:
            raise ValueError(f"{where}: posture {cells} is not numeric") from exc
    elif any(cells):
        raise ValueError(f"{where}: posture is partly filled ({dict(zip(PSI_NAMES, cells, strict=True))})")
    else:
        posture = None
    split = row["split"].strip()
    if split not in SPLITS:
        raise ValueError(f"{where}: split {split!r}; expected train or test")
    image = Path(row["image"])
    return Record(
        id=row["id"],
        split=split,
        report=row["report"],
        view=row["view"],
        labels=labels,
        image_path=image if image.is_absolute() else base / image,
        posture=posture,
    )


def load_records(data_dir: str | Path, split: str | None = None) -> list[Record]:
    """Records of a dataset directory (optionally one split), in file order."""
    data_dir = Path(data_dir)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    meta = data_dir / "metadata.csv"
    if not meta.is_file():
        from cxrl.world import mimic  # pandas and PIL only when a MIMIC root is read

        if mimic.is_mimic_root(data_dir):
            records = mimic.select_records(data_dir, mimic.MimicSelection())
            return [r for r in records if split is None or r.split == split]
        raise FileNotFoundError(
            f"{meta} not found: build a world with `cxrl world build --out {data_dir}` "
            "or select MIMIC-CXR-JPG with `cxrl world mimic ROOT --out DIR`"
        )
    with open(meta, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{meta}: missing columns {missing}")
        records = [_parse_row(row, data_dir, f"{meta}:{i + 2}") for i, row in enumerate(reader)]
    return [r for r in records if split is None or r.split == split]


class ImageDataset(Dataset):
    """torch Dataset over records -> {"image" [1,H,W] in [0,1], "report", "labels" [20], "posture" [5], "id"}.

    ``labels`` follows ``cxrl.labels.LABELS`` with NaN where the report does not mention a
    label; ``posture`` is NaN for real data. ``size`` resizes (via cxrl.imaging) when given.
    """

    def __init__(self, records: list[Record], size: int | None = None):
        if not records:
            raise ValueError("ImageDataset needs at least one record")
        self.records = records
        self.size = size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        if not r.image_path.is_file():
            raise FileNotFoundError(f"image of record {r.id} is missing: {r.image_path}")
        image = load_image(r.image_path)  # [1, H, W]
        if self.size is not None:
            image = resize(image[None], self.size)[0]
        labels = torch.tensor([float(r.labels.get(lab, math.nan)) for lab in LABELS])  # [20]
        posture = torch.tensor(r.posture if r.posture is not None else [math.nan] * 5, dtype=torch.float32)
        return {"image": image, "report": r.report, "labels": labels, "posture": posture, "id": r.id}
