"""Checkpoint files of the reward models: safetensors weights + a JSON manifest, written atomically.

A checkpoint directory holds ``model.safetensors`` (large float tensors in half precision,
small ones in float32), ``manifest.json`` (model name, architecture config, sha256 of every
file, the command and data seed that made it, quality figures) and any extra files (the
CLIP tokenizer). The default-world checkpoints live in ``cxrl/assets/default/<model>/``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cxrl.infra.fileio import atomic_write_bytes
from cxrl.infra.hashing import sha256_file

DEFAULT_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "default"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
HALF_MIN_NUMEL = 1024  # tensors at least this big are stored in float16


def compact_state(state: dict[str, torch.Tensor], half: bool = True) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; large float tensors as float16 when ``half``."""
    out = {}
    for key, t in state.items():
        t = t.detach().cpu().contiguous()
        if half and t.is_floating_point() and t.numel() >= HALF_MIN_NUMEL:
            t = t.half()
        out[key] = t
    return out


def write_checkpoint(
    out_dir: str | Path,
    model_name: str,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    extra: dict[str, Any],
    half: bool = True,
) -> dict[str, Any]:
    """Write weights and manifest to ``out_dir``; returns the manifest.

    Files other than the manifest already in ``out_dir`` (e.g. tokenizer files) are hashed too.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    try:
        save_file(compact_state(state, half), tmp, metadata={"model": model_name})
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    files = {
        p.name: sha256_file(p)
        for p in sorted(out.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")
    }
    manifest = {"model": model_name, "config": config, "files": files, **extra}
    atomic_write_bytes(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_checkpoint(directory: str | Path, model_name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(float32 state dict, manifest)`` from a checkpoint directory.

    Checks the model name and every file's sha256 against the manifest (a tampered or corrupted
    file is refused with a ValueError that names it).
    """
    path = Path(directory)
    weights, manifest_path = path / WEIGHTS_FILE, path / MANIFEST_FILE
    if not weights.is_file() or not manifest_path.is_file():
        raise ValueError(
            f"{path} is not a reward checkpoint: need {WEIGHTS_FILE} and {MANIFEST_FILE} "
            f"(made by `cxrl pretrain {model_name}`)"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("model") != model_name:
        raise ValueError(f"{path} holds a {manifest.get('model')!r} checkpoint, expected {model_name!r}")
    verify_files(path, manifest)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(weights)).items()}
    return state, manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Refuse a checkpoint whose files differ from the sha256 its manifest records (or lack one)."""
    files = manifest.get("files") or {}
    if WEIGHTS_FILE not in files:
        raise ValueError(f"{directory}/{MANIFEST_FILE} records no sha256 for {WEIGHTS_FILE}; rewrite it")
    for name, want in files.items():
        file = directory / name
        if not file.is_file():
            raise ValueError(f"{file} is listed in {MANIFEST_FILE} but missing; restore the checkpoint")
        got = sha256_file(file)
        if got != want:
            raise ValueError(
                f"{file} has sha256 {got[:16]}..., but {MANIFEST_FILE} records {want[:16]}...: the file "
                "was changed after the checkpoint was written; restore it (e.g. `git checkout` the "
                "committed assets) or rebuild it with the manifest's `command`"
            )


def weights_hash(directory: str | Path) -> str:
    """sha256 of the weights file of a checkpoint directory."""
    return sha256_file(Path(directory) / WEIGHTS_FILE)
