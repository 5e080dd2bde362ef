"""Atomic file writes: a temporary file beside the target, renamed over it.

Readers see the old file or the new one, never a partial write; an interrupted write leaves at most
a hidden ``.NAME.*`` temporary file beside the target. Files get mode 0644 (``mkstemp`` makes 0600,
which would hide reports and checkpoints from other users of a shared run directory).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its directory); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically, line endings as given; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
