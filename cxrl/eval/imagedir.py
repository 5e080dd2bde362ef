"""A directory of generated images with their reports: how any generator's output is evaluated.

Format (``images:DIR`` in ``cxrl evaluate``; also what ``--save-images`` writes)::

    DIR/reports.csv      header ``file,report,prompt_id``; one row per image
    DIR/<file>           the image (PNG or JPEG, greyscale or RGB; read through cxrl.imaging)

``file`` is relative to DIR. ``prompt_id`` groups the images generated for one report
(MS-SSIM diversity is computed within a group); every image of a group must carry
the same report and size. Groups keep the order of their first row. ``prompt_id`` may
be left out: then images with the same report text form a group. So a ``file,report``
CSV as `cxrl score --reports` reads it (:mod:`cxrl.score_cli`) is also a valid index.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cxrl import imaging
from cxrl.infra.fileio import atomic_write_text

log = logging.getLogger(__name__)

REPORTS_FILE = "reports.csv"
COLUMNS: tuple[str, ...] = ("file", "report", "prompt_id")
REQUIRED: tuple[str, ...] = ("file", "report")


@dataclass
class Group:
    """The images generated for one prompt."""

    prompt_id: str
    report: str
    images: torch.Tensor  # [K,1,H,W] in [0,1]


@dataclass(frozen=True)
class Entry:
    file: str
    report: str
    prompt_id: str


def read_index(directory: str | Path) -> list[Entry]:
    """Rows of ``DIR/reports.csv``, checked (columns, non-empty fields, files present)."""
    directory = Path(directory)
    path = directory / REPORTS_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} not found; an images directory needs a {REPORTS_FILE} with columns {','.join(COLUMNS)}"
        )
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in fields]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}; expected header {','.join(COLUMNS)}")
        needed = COLUMNS if "prompt_id" in fields else REQUIRED
        entries = []
        for line, row in enumerate(reader, start=2):
            empty = [c for c in needed if not (row.get(c) or "").strip()]
            if empty:
                raise ValueError(f"{path}, line {line}: empty {empty}")
            report = row["report"].strip()
            entries.append(Entry(row["file"].strip(), report, (row.get("prompt_id") or report).strip()))
    if not entries:
        raise ValueError(f"{path} lists no images")
    absent = [e.file for e in entries if not (directory / e.file).is_file()]
    if absent:
        raise ValueError(f"{len(absent)} images listed in {path} are missing, e.g. {absent[:3]}")
    return entries


def group_entries(entries: Sequence[Entry]) -> list[tuple[str, str, list[str]]]:
    """Entries -> [(prompt_id, report, files)] in first-appearance order; one report per prompt_id."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for e in entries:
        if e.prompt_id not in groups:
            groups[e.prompt_id] = (e.report, [])
        report, files = groups[e.prompt_id]
        if e.report != report:
            raise ValueError(
                f"prompt_id {e.prompt_id!r} has two different reports; give each report its own id"
            )
        files.append(e.file)
    return [(pid, report, files) for pid, (report, files) in groups.items()]


def iter_groups(directory: str | Path, max_prompts: int | None = None) -> Iterator[Group]:
    """Load the directory group by group (at most ``max_prompts`` groups)."""
    directory = Path(directory)
    grouped = group_entries(read_index(directory))
    if max_prompts is not None:
        grouped = grouped[:max_prompts]
    for pid, report, files in grouped:
        images = [imaging.load_image(directory / f) for f in files]
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) != 1:
            raise ValueError(
                f"images of prompt_id {pid!r} differ in size {sorted(sizes)}; give them one size"
            )
        yield Group(pid, report, imaging.validate(torch.stack(images)))


def count_groups(directory: str | Path) -> int:
    return len(group_entries(read_index(directory)))


class ImageDirWriter:
    """Writes groups into the format above; ``reports.csv`` is replaced atomically on close."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows: list[Entry] = []

    def add(self, group: Group) -> None:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in group.prompt_id)
        for k, image in enumerate(group.images):
            name = f"{len(self.rows):06d}-{safe}-{k}.png"
            imaging.save_image(image, self.directory / name)
            self.rows.append(Entry(name, group.report, group.prompt_id))

    def close(self) -> Path:
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        writer.writerows((e.file, e.report, e.prompt_id) for e in self.rows)
        final = atomic_write_text(self.directory / REPORTS_FILE, buf.getvalue())
        log.info("wrote %d images to %s", len(self.rows), self.directory)
        return final
