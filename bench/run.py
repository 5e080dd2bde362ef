"""`make bench`: run the quick benchmarks one after another and summarise their JSON.

Each benchmark is its own script (``python -m bench.<name> --out DIR``) writing
``DIR/<name>.json``; this runner calls them in turn, then writes ``DIR/summary.md``
with every top-level number they recorded. ``bench_reproduce`` (about 90 minutes) is
left out; run it on its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

QUICK = ("bench_labeler", "bench_world", "bench_epoch", "bench_services")


def flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, name + ".")
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            rows.append((name, value))
    return rows


def summarise(out: Path, results: dict[str, int]) -> str:
    lines = ["# Benchmarks", ""]
    for name, code in results.items():
        lines.append(f"## {name} (exit {code})")
        path = out / f"{name}.json"
        if not path.is_file():
            lines += ["", "no JSON written", ""]
            continue
        lines += ["", "| measure | value |", "|---|---|"]
        for key, value in flatten(json.loads(path.read_text())):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=Path("out/bench"), help="directory for the JSON and summary.md"
    )
    ap.add_argument("--only", nargs="*", default=list(QUICK), choices=QUICK, help="benchmarks to run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.only:
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", "--out", str(args.out)])
        results[name] = code
        print(f"{name}: exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
    summary = summarise(args.out, results)
    (args.out / "summary.md").write_text(summary)
    print(summary)
    return max(results.values(), default=0)


if __name__ == "__main__":
    sys.exit(main())
