"""`cxrl pretrain MODEL …`: train the default-world models (and the posture net on MIMIC-CXR-JPG).

Each module in ``PRETRAIN_COMMANDS`` exposes ``register_pretrain(subparsers)`` adding one
model's parser with ``func`` set. Only listed modules are offered.
"""

from __future__ import annotations

import argparse
import importlib

# Add a line when a model's training command is done.
PRETRAIN_COMMANDS: list[str] = [
    "cxrl.pretrain.posture",
    "cxrl.pretrain.diagnostic",
    "cxrl.pretrain.clip",
    "cxrl.pretrain.generator",
]


def register(sub: argparse._SubParsersAction) -> None:
    if not PRETRAIN_COMMANDS:
        return
    parser = sub.add_parser("pretrain", help="train a reward model or the default-world generator")
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name in PRETRAIN_COMMANDS:
        importlib.import_module(name).register_pretrain(models)
