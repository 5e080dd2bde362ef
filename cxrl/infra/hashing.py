"""sha256 digests: of a file, of a directory of files, of a JSON-able value (hex strings).

Weights hashes in every reward response, checkpoint manifests, the anchor cache's generator
version and the anchor-version key all come from here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20  # read files a MiB at a time


def _update_from_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (``sha256sum``'s digest)."""
    h = hashlib.sha256()
    _update_from_file(h, Path(path))
    return h.hexdigest()


def sha256_tree(directory: str | Path, suffixes: Iterable[str] | None = None) -> str:
    """Hex sha256 over every file under ``directory`` (only ``suffixes`` when given), in sorted order
    of their relative paths, each path followed by its bytes: renaming or editing any file changes it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"cannot hash {directory}: not a directory")
    wanted = None if suffixes is None else set(suffixes)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and (wanted is None or p.suffix in wanted))
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(directory)).encode())
        _update_from_file(h, path)
    return h.hexdigest()


def sha256_json(value) -> str:
    """Hex sha256 of ``value`` as JSON with sorted keys (``json.dumps`` spacing, UTF-8): equal values,
    equal digests."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
