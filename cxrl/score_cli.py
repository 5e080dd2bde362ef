"""`cxrl score`: score any generator's images with the reward services and print a summary.

Inputs:
- ``--images DIR``: every ``.png``/``.jpg``/``.jpeg`` in DIR (greyscale or converted to
  it), all of one size, taken in sorted file-name order.
- ``--reports FILE``: either a CSV with a header row and columns ``file,report`` (``file``
  = an image file name in DIR; every image needs a row), or any other text file with
  one report per line, in the sorted order of the image file names (blank lines are
  skipped; the count must match).
- ``--anchor-images DIR`` (optional): anchor images with the same file names as
  ``--images``; turns on the comparative (RLCF) terms.
Output: a table (mean, std, min, max of every component and the total) and the models
used; ``--json OUT`` writes every image's components too.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import torch

from cxrl import imaging
from cxrl.infra.fileio import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def register_score(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score images + reports with the reward services (gRPC)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", type=Path, required=True, help="directory of generated images")
    p.add_argument("--reports", type=Path, required=True, help="CSV file,report or one report per line")
    p.add_argument("--anchor-images", type=Path, default=None, help="directory of anchor images (same names)")
    p.add_argument(
        "--server",
        default="127.0.0.1:9000",
        help="gateway HOST:PORT, grpc://HOST:PORT, or grpcs://HOST:PORT for TLS (CXRL_TLS_CA/_CERT/_KEY)",
    )
    p.add_argument("--weights", default=None, help="e.g. align=1,diag=10,consist=10 (default: server's)")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline per request in seconds")
    p.add_argument("--json", type=Path, default=None, help="write per-image results to this JSON file")
    p.set_defaults(func=run)


def image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"image directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {directory}")
    return files


def load_images(files: list[Path]) -> torch.Tensor:
    """Image files of one size -> float ``[B,1,H,W]``."""
    images = [imaging.load_image(f) for f in files]
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images must share one size, found {sorted(sizes)}; resize them first")
    return torch.stack(images)


def read_reports(path: Path, files: list[Path]) -> list[str]:
    """Reports for ``files`` from a ``file,report`` CSV or a one-report-per-line file."""
    if not path.is_file():
        raise FileNotFoundError(f"reports file not found: {path}")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "report"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: a reports CSV needs the header columns file,report")
            by_name = {Path(row["file"]).name: row["report"] for row in reader}
        missing = [f.name for f in files if f.name not in by_name]
        if missing:
            raise ValueError(f"{path}: no report for {len(missing)} image(s), e.g. {missing[:3]}")
        return [by_name[f.name] for f in files]
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != len(files):
        raise ValueError(
            f"{path} has {len(lines)} reports but there are {len(files)} images; "
            "give one report per line in sorted image-name order, or a CSV with file,report"
        )
    return lines


def parse_weights(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--weights item {item!r} must look like name=number (align, diag, consist)")
    return out


def summary_rows(result) -> list[tuple[str, torch.Tensor]]:
    rows = []
    for prefix, comp in (("", result.policy), ("anchor ", result.anchor)):
        if comp is None:
            continue
        for name in ("r_align", "diag_acc", "consistency"):
            value = getattr(comp, name)
            if value is not None:
                rows.append((prefix + name, value))
    rows.append(("total", result.total))
    return rows


def format_table(result, n: int) -> str:
    lines = [f"{'component':<22}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}   ({n} images)"]
    for name, v in summary_rows(result):
        std = float(v.std()) if v.numel() > 1 else 0.0
        lines.append(
            f"{name:<22}{float(v.mean()):>10.4f}{std:>10.4f}{float(v.min()):>10.4f}{float(v.max()):>10.4f}"
        )
    lines.append(
        "models: " + ", ".join(f"{m.name} {m.version} ({m.weights_hash[:12]})" for m in result.models)
    )
    return "\n".join(lines)


def per_image(result, files: list[Path]) -> list[dict]:
    out = []
    for i, f in enumerate(files):
        item = {"file": f.name, "total": float(result.total[i])}
        for prefix, comp in (("", result.policy), ("anchor_", result.anchor)):
            if comp is None:
                continue
            for name in ("psi", "r_align", "diag_acc", "diag_probs", "consistency"):
                value = getattr(comp, name)
                if value is not None:
                    item[prefix + name] = value[i].tolist()
        out.append(item)
    return out


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1))


def run(args: argparse.Namespace) -> int:
    from cxrl.client import RewardClient, RewardServiceError  # grpc only when the command runs

    files = image_files(args.images)
    images = load_images(files)  # [B,1,H,W]
    reports = read_reports(args.reports, files)
    anchors = None
    if args.anchor_images is not None:
        names = {f.name for f in image_files(args.anchor_images)}
        missing = [f.name for f in files if f.name not in names]
        if missing:
            raise ValueError(
                f"{args.anchor_images}: no anchor for {len(missing)} image(s), e.g. {missing[:3]}"
            )
        anchors = load_images([args.anchor_images / f.name for f in files])
    with RewardClient(args.server, weights=parse_weights(args.weights), timeout_s=args.timeout) as client:
        try:
            result = client.score(images, reports, anchors)
        except RewardServiceError as exc:
            log.error("%s (is `cxrl serve` running at %s?)", exc, args.server)
            return 1
    print(format_table(result, len(files)))
    if args.json is not None:
        payload = {
            "server": args.server,
            "comparative": result.anchor is not None,
            "models": [m.__dict__ for m in result.models],
            "images": per_image(result, files),
        }
        write_json(args.json, payload)
        print(f"per-image results: {args.json}")
    return 0
