"""Atomic CXRL checkpoints: LoRA in diffusers format, ACE, optimiser, RNG and stat-tracker state.

A checkpoint is a directory ``RUN/checkpoints/epoch-NNNNNN/`` holding

- ``pytorch_lora_weights.safetensors``: the UNet LoRA, loadable by ``pipe.load_lora_weights(dir)``
- ``ace.safetensors``: ACE tokens ``{"tokens": [N, d]}`` (absent without ACE)
- ``optimizer.pt``, ``rng.pt`` (torch, numpy, python and the trainer's generator), ``stat_tracker.json``
- ``state.json``: epoch, optimiser step, the run config, and the length and sha256 of its metrics
  history;
- ``manifest.json``: sha256 and size of every other file, written last.

The metrics history is kept once for all checkpoints, in ``RUN/checkpoints/history.json`` (written
before the checkpoint it belongs to): a checkpoint of epoch k reads its first k entries back and checks
them against its sha256. Only the newest ``checkpoint_keep`` checkpoints of the run config are kept
(the final one is the newest), so disk use grows linearly with the epochs, not with their square.

It is written to a temporary directory beside it and renamed into place; the ``latest`` pointer file
is replaced last, so a crash leaves either the old or the new checkpoint, never half of one (a kill
may leave a ``.tmp-epoch-*`` directory or ``.latest-*`` file behind: :func:`remove_partial` clears
them, and nothing reads them).

Loading checks every file against the manifest first and raises :class:`CheckpointError` (a
``ValueError``) naming the file and what to do, so a truncated, bit-flipped or missing file is never
half-loaded. Checkpoints written before manifests existed still load; their files are only checked
for being readable. A corrupt newest checkpoint stops an automatic resume with that error; it is
never skipped silently (training from an older epoch or from scratch is the user's decision).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft
from safetensors.torch import load_file, save_file

from cxrl.infra.fileio import atomic_write_text, fsync_dir, fsync_tree
from cxrl.infra.hashing import sha256_file, sha256_json
from cxrl.rl.policy import Policy

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
ACE_FILE = "ace.safetensors"
MANIFEST = "manifest.json"
LATEST = "latest"
HISTORY = "history.json"
TMP_PREFIXES = (".tmp-epoch-", ".latest-", f".{HISTORY}.")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, altered or unreadable; the message says which and what to do."""


def _write_manifest(directory: Path) -> None:
    """``manifest.json``: sha256 and byte size of every file in ``directory`` (written last)."""
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"format": 1, "files": files}, indent=1))


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
    keep: int | None = None,
) -> Path:
    """Write ``root/epoch-NNNNNN`` atomically and point ``root/latest`` at it. Returns its path.

    ``state["history"]`` goes to ``root/history.json`` (one copy for all checkpoints). Then only the
    newest ``keep`` checkpoints stay (default: ``state["config"]["checkpoint_keep"]``; None keeps all).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if keep is None:
        keep = (state.get("config") or {}).get("checkpoint_keep")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 checkpoint, got {keep}")
    state = _history_out(root, state)
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
        _write_manifest(tmp)
        fsync_tree(tmp)  # every file on disk before the directory is renamed and the pointer moves
        if final.exists():  # re-writing the same epoch (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_pointer(root, final.name)
    log.info("checkpoint %s", final)
    if keep is not None:
        prune(root, keep)
    return final


def prune(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints up to the one ``latest`` names; returns the deleted."""
    root = Path(root)
    latest = latest_checkpoint(root)
    if latest is None:
        return []
    done = sorted(p for p in root.glob("epoch-*") if p.is_dir() and p.name <= latest.name)
    removed = done[: max(0, len(done) - keep)]
    for p in removed:
        shutil.rmtree(p)
    if removed:
        fsync_dir(root)
        log.debug("removed %d old checkpoint(s), keeping the newest %d", len(removed), keep)
    return removed


def _history_out(root: Path, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without its history, which goes to ``root/history.json``; its length and hash stay."""
    if "history" not in state:
        return state
    history = list(state["history"])
    atomic_write_text(root / HISTORY, json.dumps(history))
    rest = {k: v for k, v in state.items() if k != "history"}
    return rest | {"history_epochs": len(history), "history_sha256": sha256_json(history)}


def _history_in(directory: Path, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its history read back from ``history.json`` beside the checkpoint, checked."""
    if "history_sha256" not in state:
        return state  # no history, or a checkpoint that carries its own
    n, digest = state.pop("history_epochs"), state.pop("history_sha256")
    path = directory.parent / HISTORY
    try:
        history = json.loads(path.read_text())[:n]
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path} (the metrics history of {directory.name}) cannot be read ({type(exc).__name__}: "
            f"{exc}); {_remedy(directory)}"
        ) from exc
    if len(history) != n or sha256_json(history) != digest:
        raise CheckpointError(
            f"{path} does not hold the {n} epoch(s) of metrics history {directory.name} was written "
            f"with (altered or truncated); {_remedy(directory)}"
        )
    state["history"] = history
    return state


def checkpoint_history(directory: str | Path) -> list[dict[str, Any]]:
    """The metrics history a checkpoint was written with (its epochs only)."""
    directory = Path(directory)
    state = _read(directory, "state.json", _read_json)
    return list(_history_in(directory, state).get("history", []))


def _write_pointer(root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".latest-", dir=root)
    with os.fdopen(fd, "w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / LATEST)
    fsync_dir(root)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The directory the ``latest`` pointer names, or None when there is no checkpoint yet.

    The pointer is only read here; whether that checkpoint is intact is checked when it is loaded.
    """
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_bytes().decode("utf-8", errors="replace").strip()
    if not re.fullmatch(r"epoch-\d{6}", name):
        newest = sorted(p.name for p in root.glob("epoch-*") if p.is_dir())
        hint = f"write '{newest[-1]}' into it" if newest else "remove it"
        raise CheckpointError(f"{pointer} is damaged (holds {name[:40]!r}, not a checkpoint name); {hint}")
    path = root / name
    if not path.is_dir():
        raise CheckpointError(
            f"{pointer} names {name}, which does not exist; remove the pointer or restore it"
        )
    return path


def remove_partial(root: str | Path) -> list[Path]:
    """Delete what an interrupted save left in ``root`` (temporary dirs and pointer files); returns them."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = [p for p in sorted(root.iterdir()) if p.name.startswith(TMP_PREFIXES)]
    for p in removed:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        log.warning("removed %s, left by an interrupted checkpoint write", p)
    return removed


def _remedy(directory: Path) -> str:
    """What the user can do about a corrupt checkpoint: fall back to an older one, or restore it."""
    root = directory.parent
    older = sorted(
        p.name
        for p in root.glob("epoch-*")
        if p.is_dir() and p.name < directory.name and not p.name.startswith(".")
    )
    if older:
        return (
            f"restore it from a backup, or resume from the previous checkpoint {older[-1]}: delete "
            f"{directory} and write '{older[-1]}' into {root / LATEST}"
        )
    return f"restore it from a backup, or delete {root} to train this run from scratch"


def _corrupt(directory: Path, name: str, problem: str) -> CheckpointError:
    return CheckpointError(
        f"corrupt checkpoint {directory}: {directory / name} {problem}; {_remedy(directory)}"
    )


def _manifest(directory: Path) -> dict[str, dict] | None:
    """The checkpoint's file table, or None for a checkpoint written before manifests."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict) or not all(
            isinstance(e, dict) and {"sha256", "bytes"} <= set(e) for e in files.values()
        ):
            raise TypeError("'files' is not a mapping of name -> {sha256, bytes}")
        return files
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise _corrupt(directory, MANIFEST, f"is not a valid manifest ({exc})") from exc


def verify_checkpoint(directory: str | Path, names: list[str] | None = None) -> bool:
    """Check files (all, or ``names``) against the manifest. True if checked, False without a manifest.

    Raises :class:`CheckpointError` naming the first missing, truncated or altered file.
    """
    directory = Path(directory)
    files = _manifest(directory)
    if files is None:
        log.debug("%s has no %s (written by an older cxrl): checksums not verified", directory, MANIFEST)
        return False
    for name in names if names is not None else sorted(files):
        entry = files.get(name)
        path = directory / name
        if entry is None:
            if path.exists():
                raise _corrupt(directory, name, f"is not listed in {MANIFEST}")
            continue  # not part of this checkpoint (e.g. no ACE); the loader decides if that is an error
        if not path.is_file():
            raise _corrupt(directory, name, "is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise _corrupt(directory, name, f"has {size} bytes, {entry['bytes']} were written (truncated?)")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise _corrupt(
                directory, name, f"has sha256 {digest[:16]}..., {entry['sha256'][:16]}... was written"
            )
    return True


def _read(directory: Path, name: str, reader):
    """``reader(path)``, with any parse error of a damaged file turned into a CheckpointError."""
    try:
        return reader(directory / name)
    except FileNotFoundError as exc:
        raise _corrupt(directory, name, "is missing") from exc
    except Exception as exc:  # safetensors, pickle and JSON each raise their own kinds
        raise _corrupt(directory, name, f"cannot be read ({type(exc).__name__}: {exc})") from exc


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _torch_load(path: Path) -> Any:
    return torch.load(path, weights_only=True)


def load_lora(policy: Policy, directory: str | Path, verify: bool = True) -> None:
    """Load a diffusers-format LoRA file into the policy's (already attached) adapter, exactly."""
    from peft import set_peft_model_state_dict

    directory = Path(directory)
    path = directory / LORA_FILE
    if policy.lora_rank == 0:
        if path.exists():
            raise ValueError(f"{path} holds LoRA weights but the policy has lora.rank 0")
        return
    if verify:
        verify_checkpoint(directory, [LORA_FILE])
    if not path.is_file():
        raise ValueError(f"{path} not found; is {directory} a CXRL checkpoint with LoRA?")
    raw = _read(directory, LORA_FILE, load_file)
    unet_sd = {k.removeprefix("unet."): v for k, v in raw.items() if k.startswith("unet.")}
    peft_sd = convert_unet_state_dict_to_peft(unet_sd)
    result = set_peft_model_state_dict(policy.unet, peft_sd)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path} does not fit the policy's LoRA (unexpected keys {unexpected[:3]}...)")


def load_ace(policy: Policy, directory: str | Path, verify: bool = True) -> None:
    directory = Path(directory)
    path = directory / ACE_FILE
    if policy.ace is None:
        if path.exists():
            raise ValueError(f"{path} holds ACE tokens but the policy has ACE disabled")
        return
    if verify:
        verify_checkpoint(directory, [ACE_FILE])
    if not path.is_file():
        raise ValueError(f"{path} not found; the checkpoint was written without ACE")
    ace = _read(directory, ACE_FILE, load_file)
    if "tokens" not in ace:
        raise _corrupt(directory, ACE_FILE, f"has no 'tokens' tensor (found {sorted(ace)})")
    tokens = ace["tokens"]
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
    """Restore policy weights (and optimiser/RNG when given). Returns (state.json, stat-tracker state).

    Every file is verified and read before anything is restored, so a corrupt checkpoint raises
    :class:`CheckpointError` and leaves the policy, optimiser and RNGs as they were.
    """
    directory = Path(directory)
    if not (directory / "state.json").is_file() and not (directory / MANIFEST).is_file():
        raise ValueError(f"{directory} is not a CXRL checkpoint (no state.json)")
    verify_checkpoint(directory)
    state = _read(directory, "state.json", _read_json)
    tracker = _read(directory, "stat_tracker.json", _read_json)
    if not isinstance(state, dict) or "epoch" not in state:
        raise _corrupt(directory, "state.json", "holds no 'epoch' (not a CXRL checkpoint state)")
    state = _history_in(directory, state)
    opt_state = _read(directory, "optimizer.pt", _torch_load) if optimizer is not None else None
    rng_state = _read(directory, "rng.pt", _torch_load) if generator is not None else None
    load_lora(policy, directory, verify=False)
    load_ace(policy, directory, verify=False)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    if rng_state is not None:
        restore_rng(rng_state, generator)
    return state, tracker
