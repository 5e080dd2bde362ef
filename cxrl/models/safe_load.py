"""Loading released weights that come as pickles (torchxrayvision's ``.pt``, CXR-CLIP's ``.tar``).

A pickle can run any code when it is loaded, so a release file is never fully unpickled on trust:

1. With a pinned ``sha256`` (from the config), the file's digest is checked first; a different
   file — tampered with, or another download — is refused before a byte of it is unpickled.
2. It is then loaded with ``torch.load(weights_only=True)``, which builds tensors, plain containers
   and only the classes on ``allowed`` (e.g. torchxrayvision's DenseNet layers), never calls
   anything else. A file that needs anything more is refused, naming what it needs.
3. Only a file whose pinned digest matched may be loaded with the full unpickler when step 2
   cannot read it (an old legacy-format release): the operator vouched for those exact bytes.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cxrl.infra.hashing import sha256_file

log = logging.getLogger(__name__)


class UntrustedWeightsError(ValueError):
    """A release file that is not the pinned one, or that needs more than a weights-only load."""


def check_sha256(path: Path, sha256: str | None, what: str) -> bool:
    """True when ``sha256`` is given and matches; raises when it is given and does not match."""
    if not sha256:
        return False
    digest = sha256_file(path)
    if digest.lower() != sha256.strip().lower():
        raise UntrustedWeightsError(
            f"{what} {path} has sha256 {digest}, but the config pins {sha256.strip()}: it is not the "
            "file you pinned (tampered with, corrupted, or another download); it was not loaded. "
            "Fetch the release again and check it, or pin the digest of the file you trust"
        )
    return True


def load_weights(path: str | Path, what: str, allowed: Sequence[type] = (), sha256: str | None = None) -> Any:
    """``torch.load`` of a release file, on CPU, safely (see the module docstring)."""
    path = Path(path)
    pinned = check_sha256(path, sha256, what)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if pinned:
            log.warning(
                "%s %s: weights-only load failed; loading it in full as its sha256 is pinned", what, path
            )
            return torch.load(path, map_location="cpu", weights_only=False)
        raise UntrustedWeightsError(
            f"{what} {path} holds Python objects that a weights-only load refuses ({_first_line(exc)}); "
            f"it was not loaded. If you trust this exact file, pin its digest in the config "
            f"(sha256: {sha256_file(path)})"
        ) from None


def _first_line(exc: Exception) -> str:
    """What the weights-only unpickler refused, without torch's advice to allow-list it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "unknown")
    return found.split(" was not an allowed global")[0].split("Unsupported global: ")[-1]
