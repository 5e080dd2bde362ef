"""Shared pieces of the reward-model training commands (`cxrl pretrain posture|diagnostic|clip`).

Each model's command lives in its own module (:mod:`.posture`, :mod:`.diagnostic`,
:mod:`.clip`); this one holds what they share: reading a dataset once into an in-memory
uint8 tensor, the deterministic validation split by report, common CLI arguments, and the
checkpoint + manifest write.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrl import imaging
from cxrl.models.reward_assets import write_checkpoint

log = logging.getLogger(__name__)


def add_common_args(parser: argparse.ArgumentParser, size: int, epochs: int, batch: int, lr: float) -> None:
    """Arguments every reward pretrain command takes."""
    parser.add_argument(
        "--data", required=True, help="dataset directory (default world or MIMIC-CXR-JPG selection)"
    )
    parser.add_argument("--out", required=True, help="output checkpoint directory (created)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--size", type=int, default=size, help="input resolution in pixels")
    parser.add_argument("--epochs", type=int, default=epochs, help="passes over the training images")
    parser.add_argument("--batch", type=int, default=batch, help="batch size")
    parser.add_argument("--lr", type=float, default=lr, help="AdamW learning rate")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images per split")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--version", default=None, help="version string recorded in the manifest")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_split(
    data_dir: str | Path, split: str, size: int, limit: int | None = None
) -> tuple[torch.Tensor, list]:
    """All images of ``split`` as uint8 ``[N,1,size,size]`` (decoded once) and their records."""
    from cxrl.world.dataset import ImageDataset, load_records

    records = load_records(Path(data_dir), split)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"{data_dir} has no {split!r} records; build a world or check the directory")
    dataset = ImageDataset(records, size)
    images = torch.empty((len(records), 1, size, size), dtype=torch.uint8)
    start = time.time()
    for i in range(len(records)):
        images[i] = imaging.to_uint8(dataset[i]["image"][None])[0]
    log.info("loaded %d %s images at %d px in %.1fs", len(records), split, size, time.time() - start)
    return images, records


def split_by_report(records: list, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) indices; all images of one report text go to the same side."""
    val, train = [], []
    for i, rec in enumerate(records):
        digest = hashlib.sha256(f"{seed}:{rec.report}".encode()).digest()
        (val if int.from_bytes(digest[:8], "big") / 2**64 < fraction else train).append(i)
    if not val or not train:
        raise ValueError(
            f"validation split of {fraction} left one side empty ({len(train)} train, {len(val)} val)"
        )
    return train, val


def data_seed(data_dir: str | Path) -> int | None:
    """The seed a dataset was built with, if its manifest records one."""
    for name in ("sampling.json", "manifest.json"):
        path = Path(data_dir) / name
        if path.is_file():
            try:
                value = json.loads(path.read_text()).get("seed")
            except (ValueError, AttributeError):
                continue
            if value is not None:
                return int(value)
    return None


def command_line(args: argparse.Namespace, model: str) -> str:
    """The full command that reproduces this run, every option spelled out (defaults included)."""
    parts = ["cxrl", "pretrain", model]
    for key, value in vars(args).items():
        if key in ("func", "command", "model", "log_level") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list | tuple):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def save(
    args: argparse.Namespace, model_name: str, state: dict, config: dict, quality: dict, **extra: Any
) -> dict:
    """Write the checkpoint and a manifest with provenance and quality figures."""
    manifest = write_checkpoint(
        args.out,
        model_name,
        state,
        config,
        {
            "version": args.version or f"{Path(args.data).name}-seed{args.seed}",
            "command": command_line(args, model_name),
            "training_seed": args.seed,
            "data": str(args.data),
            "data_seed": data_seed(args.data),
            "quality": quality,
            **extra,
        },
    )
    log.info("wrote %s checkpoint to %s", model_name, args.out)
    return manifest
