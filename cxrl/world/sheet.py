"""`cxrl world sheet`: a labelled contact sheet of a world, for people to look at.

A header row with the canonical CXR (mean of training images) and a legend, one row of
normal images (nothing drawn), then one row per label of the vocabulary
that the world draws: images whose drawn findings include that label, those with the
fewest other findings first (cleanest examples). Each tile is captioned with the side
the finding was drawn on (R = patient's right, image left; L; B = both) and "?" when it
came from an uncertain mention drawn at half strength.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cxrl.labels import LABELS, NO_FINDING

TILE = 128
LABEL_W = 190
CAPTION_H = 14
SIDE_NAMES = {-1: "R", 1: "L", 0: "B"}


def _drawn(row: dict[str, str]) -> dict[str, tuple[int, float]]:
    out = {}
    for item in filter(None, row["rendered"].split("|")):
        label, side, strength = item.rsplit(":", 2)
        out[label] = (int(side), float(strength))
    return out


def pick_rows(rows: list[dict[str, str]], per_row: int) -> list[tuple[str, list[tuple[dict, str]]]]:
    """[(row title, [(metadata row, caption)])]: normals first, then one row per drawn label."""
    sheet = []
    normals = [r for r in rows if not r["rendered"]]
    sheet.append(("Normal (nothing drawn)", [(r, r["id"]) for r in normals[:per_row]]))
    for label in LABELS:
        if label == NO_FINDING:
            continue
        hits = [
            (len(_drawn(r)), _drawn(r)[label][1] < 1, i, r) for i, r in enumerate(rows) if label in _drawn(r)
        ]
        hits.sort(key=lambda t: (t[1], t[0], t[2]))
        tiles = []
        for _, _, _, r in hits[:per_row]:
            side, strength = _drawn(r)[label]
            extra = len(_drawn(r)) - 1
            caption = SIDE_NAMES[side] + ("?" if strength < 1 else "") + (f" +{extra}" if extra else "")
            if label == "Support Devices" and r.get("devices"):
                caption += " " + r["devices"].replace("|", ",")
            tiles.append((r, caption))
        sheet.append((f"{label} ({len(hits)})", tiles))
    return sheet


def contact_sheet(world: str | Path, out: str | Path, per_row: int = 6, split: str = "train") -> Path:
    """Write the contact sheet PNG of ``world`` to ``out`` (atomically); returns ``out``."""
    world, out = Path(world), Path(out)
    meta = world / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(
            f"{meta} not found; build the world first with `cxrl world build --out {world}`"
        )
    if per_row < 1:
        raise ValueError(f"--per-row must be at least 1, got {per_row}")
    with open(meta, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    if not rows:
        raise ValueError(f"{meta}: no {split} images")
    sheet = pick_rows(rows, per_row)
    font = ImageFont.load_default()
    row_h = TILE + CAPTION_H
    canvas = Image.new("L", (LABEL_W + per_row * TILE, (len(sheet) + 1) * row_h), color=40)
    draw = ImageDraw.Draw(canvas)
    _header(canvas, draw, font, world, len(rows), split)
    for i, (title, tiles) in enumerate(sheet, start=1):
        y = i * row_h
        draw.text((6, y + TILE // 2 - 6), title, fill=255, font=font)
        for j, (row, caption) in enumerate(tiles):
            with Image.open(world / row["image"]) as im:
                tile = im.convert("L").resize((TILE, TILE), Image.BILINEAR)
            x = LABEL_W + j * TILE
            canvas.paste(tile, (x, y))
            draw.text((x + 3, y + TILE + 1), caption[:22], fill=220, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    canvas.save(tmp)
    os.replace(tmp, out)
    return out


def _header(canvas: Image.Image, draw: ImageDraw.ImageDraw, font, world: Path, n: int, split: str) -> None:
    draw.text((6, 6), f"{world.name}: {n} {split} images", fill=255, font=font)
    legend = (
        "R: patient's right (img left)",
        "L: patient's left   B: both",
        "?: uncertain, half strength",
        "+k: k other findings drawn",
        "(n): images showing a label",
    )
    for k, line in enumerate(legend):
        draw.text((6, 30 + 14 * k), line, fill=200, font=font)
    canonical = world / "canonical.png"
    if canonical.is_file():
        with Image.open(canonical) as im:
            canvas.paste(im.convert("L").resize((TILE, TILE), Image.BILINEAR), (LABEL_W, 0))
        draw.text((LABEL_W + 3, TILE + 1), "canonical CXR", fill=220, font=font)
