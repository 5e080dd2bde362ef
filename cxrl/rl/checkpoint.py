"""Atomic CXRL checkpoints: LoRA in diffusers format, ACE, optimiser, RNG and stat-tracker state.

A checkpoint is a directory ``RUN/checkpoints/epoch-NNNNNN/`` holding

- ``pytorch_lora_weights.safetensors``: the UNet LoRA, loadable by ``pipe.load_lora_weights(dir)``
- ``ace.safetensors``: ACE tokens ``{"tokens": [N, d]}`` (absent without ACE)
- ``optimizer.pt``, ``rng.pt`` (torch, numpy, python and the trainer's generator), ``stat_tracker.json``
- ``state.json``: epoch, optimiser step, metrics history, the run config.

It is written to a temporary directory beside it and renamed into place; the ``latest`` pointer file
is replaced last, so a crash leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft
from safetensors.torch import load_file, save_file

from cxrl.models.generator import Policy

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
ACE_FILE = "ace.safetensors"
LATEST = "latest"


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    generator.set_state(state["generator"])


def save_checkpoint(
    root: str | Path,
    epoch: int,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    stat_tracker_state: dict,
    state: dict[str, Any],
) -> Path:
    """Write ``root/epoch-NNNNNN`` atomically and point ``root/latest`` at it. Returns its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-epoch-{epoch:06d}-", dir=root))
    try:
        if policy.lora_rank > 0:
            lora = convert_state_dict_to_diffusers(policy.lora_state_dict())
            lora = {k: v.detach().float().contiguous() for k, v in lora.items()}
            StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=lora, safe_serialization=True)
        if policy.ace is not None:
            save_file({"tokens": policy.ace.tokens.detach().float().contiguous()}, tmp / ACE_FILE)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(capture_rng(generator), tmp / "rng.pt")
        (tmp / "stat_tracker.json").write_text(json.dumps(stat_tracker_state))
        (tmp / "state.json").write_text(json.dumps({"epoch": epoch, **state}, indent=1))
        if final.exists():  # re-writing the same epoch (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_pointer(root, final.name)
    log.info("checkpoint %s", final)
    return final


def _write_pointer(root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".latest-", dir=root)
    with os.fdopen(fd, "w") as fh:
        fh.write(name + "\n")
    os.replace(tmp, root / LATEST)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The directory the ``latest`` pointer names, or None when there is no checkpoint yet."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not path.is_dir():
        raise ValueError(
            f"{pointer} names {path.name}, which does not exist; remove the pointer or restore it"
        )
    return path


def load_lora(policy: Policy, directory: str | Path) -> None:
    """Load a diffusers-format LoRA file into the policy's (already attached) adapter, exactly."""
    from peft import set_peft_model_state_dict

    path = Path(directory) / LORA_FILE
    if policy.lora_rank == 0:
        if path.exists():
            raise ValueError(f"{path} holds LoRA weights but the policy has lora.rank 0")
        return
    if not path.is_file():
        raise ValueError(f"{path} not found; is {directory} a CXRL checkpoint with LoRA?")
    raw = load_file(path)
    unet_sd = {k.removeprefix("unet."): v for k, v in raw.items() if k.startswith("unet.")}
    peft_sd = convert_unet_state_dict_to_peft(unet_sd)
    result = set_peft_model_state_dict(policy.unet, peft_sd)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path} does not fit the policy's LoRA (unexpected keys {unexpected[:3]}...)")


def load_ace(policy: Policy, directory: str | Path) -> None:
    path = Path(directory) / ACE_FILE
    if policy.ace is None:
        if path.exists():
            raise ValueError(f"{path} holds ACE tokens but the policy has ACE disabled")
        return
    if not path.is_file():
        raise ValueError(f"{path} not found; the checkpoint was written without ACE")
    tokens = load_file(path)["tokens"]
    if tokens.shape != policy.ace.tokens.shape:
        raise ValueError(f"ACE in {path} is {list(tokens.shape)}, policy has {list(policy.ace.tokens.shape)}")
    with torch.no_grad():
        policy.ace.tokens.copy_(tokens)


def load_checkpoint(
    directory: str | Path,
    policy: Policy,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Any], dict]:
    """Restore policy weights (and optimiser/RNG when given). Returns (state.json, stat-tracker state)."""
    directory = Path(directory)
    if not (directory / "state.json").is_file():
        raise ValueError(f"{directory} is not a CXRL checkpoint (no state.json)")
    load_lora(policy, directory)
    load_ace(policy, directory)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    if generator is not None:
        restore_rng(torch.load(directory / "rng.pt", weights_only=True), generator)
    state = json.loads((directory / "state.json").read_text())
    tracker = json.loads((directory / "stat_tracker.json").read_text())
    return state, tracker


def load_trained_policy(directory: str | Path, generator: str | Path | None = None) -> Policy:
    """A policy (base pipeline + LoRA + ACE) restored from a checkpoint, for sampling or evaluation.

    The base pipeline is the run's ``generator`` (from the checkpoint's config) unless given.
    """
    from cxrl.rl.config import CXRLConfig
    from cxrl.rl.ddpo import make_policy

    directory = Path(directory)
    if not (directory / "state.json").is_file():
        raise ValueError(f"{directory} is not a CXRL checkpoint (no state.json)")
    cfg = CXRLConfig.model_validate(json.loads((directory / "state.json").read_text())["config"])
    if generator is not None:
        cfg.generator = str(generator)
    policy = make_policy(cfg)
    load_lora(policy, directory)
    load_ace(policy, directory)
    return policy.eval()
