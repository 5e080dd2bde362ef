"""`cxrl label [TEXT ...] | --file PATH`: label radiology reports, one JSON object per report.

Each report gives one line on standard output, in input order: a JSON object mapping label
(cxrl.labels.LABELS order) to 1 / 0 / -1, unmentioned labels left out. With ``--findings``
each value is ``{"value": v, "laterality": side}`` instead. ``--file PATH`` reads one report
per line (``-`` for standard input); an empty line is an empty report and prints ``{}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from cxrl.reports.labeler import ReportLabeler


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "label",
        help="label radiology reports (1 positive, 0 negative, -1 uncertain) as JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="report texts, one argument per report")
    parser.add_argument("--file", type=str, default=None, help="file with one report per line ('-' = stdin)")
    parser.add_argument("--findings", action="store_true", help="print value and laterality per label")
    parser.set_defaults(func=run)


def _file_reports(path: str) -> Iterator[str]:
    if path == "-":
        yield from (line.rstrip("\r\n") for line in sys.stdin)
        return
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"report file {path!r} does not exist; give a text file with one report per line"
        )
    with p.open(encoding="utf-8") as handle:
        yield from (line.rstrip("\r\n") for line in handle)


def label_lines(reports: Iterable[str], findings: bool = False) -> Iterator[str]:
    """One compact JSON line per report, in input order."""
    labeler = ReportLabeler()
    for text in reports:
        if findings:
            out = {
                k: {"value": f.value, "laterality": f.laterality} for k, f in labeler.findings(text).items()
            }
        else:
            out = labeler(text)
        yield json.dumps(out)


def run(args: argparse.Namespace) -> int:
    if args.file is not None and args.texts:
        raise ValueError("give report TEXT arguments or --file PATH, not both")
    if args.file is None and not args.texts:
        raise ValueError("nothing to label: give report TEXT arguments or --file PATH (one report per line)")
    reports = _file_reports(args.file) if args.file is not None else args.texts
    for line in label_lines(reports, findings=args.findings):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0
