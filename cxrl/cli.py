"""`cxrl …`: the command line. Thin: each command lives beside the code it drives.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed args, returns an exit code). Only modules listed
in ``COMMANDS`` are offered, so `cxrl --help` lists only commands that work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cxrl import __version__
from cxrl.log import setup_logging

log = logging.getLogger(__name__)

# Each entry: a module with register(subparsers). Add a line when a command is done.
COMMANDS: list[str] = [
    "cxrl.reports.label_cli",
    "cxrl.pretrain.cli",
    "services.cli",
    "trainer.cli",
    "cxrl.eval.cli",
    "cxrl.world.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrl",
        description="Report-to-chest-X-ray generation tuned with policy-gradient RL (CXRL).",
    )
    parser.add_argument("--version", action="version", version=f"cxrl {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
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
