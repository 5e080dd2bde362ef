"""One logging setup for the library, the CLI and the services."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (survives test capture swapping it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once: one format, to stderr; level from ``CXRL_LOG_LEVEL``."""
    level = level or os.environ.get("CXRL_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if getattr(root, "_cxrl_configured", False):
        root.setLevel(level)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root.handlers[:] = [handler]
    root.setLevel(level)
    root._cxrl_configured = True  # type: ignore[attr-defined]
