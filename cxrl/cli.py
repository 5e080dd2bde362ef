"""`cxrl …`: the command line. Thin: each command lives beside the code it drives.

A command registrar ``register(subparsers)`` adds its parser(s) and sets ``func`` (called with the
parsed args, returns an exit code). The library's own commands are listed in ``LIBRARY_COMMANDS``;
the apps' commands (``cxrl serve`` from ``services``, ``cxrl train``/``demo``/``runs`` from
``trainer``) are found by name through the ``cxrl.commands`` entry points that ``pyproject.toml``
declares, so the library never imports an app. Only registered commands are offered, so
`cxrl --help` lists only commands that work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from cxrl import __version__
from cxrl.log import setup_logging

log = logging.getLogger(__name__)

# "module:function" of each library command's registrar. Add a line when a command is done.
LIBRARY_COMMANDS: list[str] = [
    "cxrl.reports.label_cli:register",
    "cxrl.pretrain.cli:register",
    "cxrl.score_cli:register_score",
    "cxrl.eval.cli:register",
    "cxrl.world.cli:register",
]
APP_COMMANDS = "cxrl.commands"  # entry-point group of the apps' registrars (pyproject.toml)


def registrars() -> list[tuple[str, Callable]]:
    """(name, register) of every command module: the library's, then the installed apps' by name."""
    found = []
    for spec in LIBRARY_COMMANDS:
        module, _, function = spec.partition(":")
        found.append((spec, getattr(importlib.import_module(module), function)))
    for entry in sorted(entry_points(group=APP_COMMANDS), key=lambda e: e.name):
        try:
            found.append((entry.name, entry.load()))
        except ImportError as exc:  # an app whose dependencies are not installed
            log.warning("`cxrl` commands of %s are unavailable: %s", entry.value, exc)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrl",
        description="Report-to-chest-X-ray generation tuned with policy-gradient RL (CXRL).",
    )
    parser.add_argument("--version", action="version", version=f"cxrl {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, register in registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
