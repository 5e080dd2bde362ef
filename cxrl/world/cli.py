"""`cxrl world build|sheet|mimic`: build the default world, draw its contact sheet, select MIMIC-CXR-JPG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("world", help="the synthetic default world and the MIMIC-CXR-JPG selection")
    cmds = parser.add_subparsers(dest="world_command", metavar="SUBCOMMAND", required=True)

    b = cmds.add_parser("build", help="render a world directory (images, metadata.csv, canonical.png)")
    b.add_argument("--out", type=Path, required=True, help="directory to create")
    b.add_argument("--train", type=int, default=5000, help="training images (default 5000)")
    b.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    b.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    b.add_argument("--seed", type=int, default=0, help="world seed: same seed, same bytes (default 0)")
    b.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    b.add_argument("--force", action="store_true", help="replace --out if it exists")
    b.set_defaults(func=_build)

    s = cmds.add_parser("sheet", help="labelled contact sheet of a world: normals and one row per finding")
    s.add_argument("dir", type=Path, help="world directory")
    s.add_argument("--out", type=Path, required=True, help="PNG to write")
    s.add_argument("--per-row", type=int, default=6, help="images per row (default 6)")
    s.add_argument("--split", default="train", choices=("train", "test"), help="split to show")
    s.set_defaults(func=_sheet)

    m = cmds.add_parser("mimic", help="select MIMIC-CXR-JPG pairs (paper protocol) into a dataset directory")
    m.add_argument("root", type=Path, help="MIMIC-CXR-JPG root (with mimic-cxr-2.0.0-*.csv[.gz] and files/)")
    m.add_argument(
        "--out", type=Path, required=True, help="directory for metadata.csv (images stay in place)"
    )
    m.add_argument("--train", type=int, default=5000, help="training pairs (default 5000)")
    m.add_argument("--test", type=int, default=1000, help="test pairs (default 1000)")
    m.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    m.set_defaults(func=_mimic)


def _build(args: argparse.Namespace) -> int:
    from cxrl.world.build import WorldConfig, build_world

    cfg = WorldConfig(
        n_train=args.train, n_test=args.test, size=args.size, seed=args.seed, workers=args.workers
    )
    summary = build_world(args.out, cfg, force=args.force)
    print(json.dumps(summary, indent=1))
    return 0


def _sheet(args: argparse.Namespace) -> int:
    from cxrl.world.sheet import contact_sheet

    path = contact_sheet(args.dir, args.out, per_row=args.per_row, split=args.split)
    print(path)
    return 0


def _mimic(args: argparse.Namespace) -> int:
    from cxrl.world.mimic import MimicSelection, write_selection

    sel = MimicSelection(n_train=args.train, n_test=args.test, seed=args.seed)
    path = write_selection(args.root, args.out, sel)
    print(path)
    return 0
