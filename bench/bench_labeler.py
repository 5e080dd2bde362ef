"""Report labeler throughput on one CPU core: `python -m bench.bench_labeler [--out DIR]`.

Labels the FINDINGS + IMPRESSION text of the IU reports that ship in the torchxrayvision
wheel (read at run time, never stored), several passes, pinned to one core. Prints reports
per CPU second of this process (the one-core rate, robust to other load on a shared
machine), reports per wall-clock second, and the ratio of the CPU rate to the 2,000
reports/s target; writes bench_labeler.json to --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from cxrl.reports.labeler import ReportLabeler

TARGET_PER_S = 2000.0


def iu_texts(limit: int | None) -> list[str]:
    """FINDINGS + IMPRESSION of each IU report (non-empty ones), in archive order."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("torchxrayvision is not installed; run `make setup`")
    path = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
    texts: list[str] = []
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if not member.name.endswith(".xml") or (fh := archive.extractfile(member)) is None:
                continue
            fields = {
                el.get("Label"): (el.text or "") for el in ET.fromstring(fh.read()).iter("AbstractText")
            }
            text = " ".join(t for t in (fields.get("FINDINGS"), fields.get("IMPRESSION")) if t).strip()
            if text:
                texts.append(text)
            if limit is not None and len(texts) >= limit:
                break
    return texts


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"cpu{core}"
    return "unpinned"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out/bench"), help="directory for bench_labeler.json"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N reports")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the reports")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")

    core = pin_one_core()
    texts = iu_texts(args.limit)
    t0 = time.perf_counter()
    labeler = ReportLabeler()
    compile_s = time.perf_counter() - t0
    labeler.batch(texts[:200])  # warm-up
    cpu_rates, wall_rates = [], []
    for _ in range(args.repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        labeler.batch(texts)
        cpu_rates.append(len(texts) / (time.process_time() - c0))
        wall_rates.append(len(texts) / (time.perf_counter() - w0))
    chars = sum(len(t) for t in texts) / len(texts)
    cpu = statistics.median(cpu_rates)
    result = {
        "benchmark": "report labeler throughput, one core",
        "reports": len(texts),
        "mean_chars_per_report": round(chars, 1),
        "repeats": args.repeats,
        "reports_per_cpu_s_median": round(cpu, 1),
        "reports_per_wall_s_median": round(statistics.median(wall_rates), 1),
        "us_cpu_per_report": round(1e6 / cpu, 1),
        "target_reports_per_s": TARGET_PER_S,
        "ratio_to_target": round(cpu / TARGET_PER_S, 2),
        "compile_s": round(compile_s, 4),
        "core": core,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out, suffix=".tmp", delete=False) as tmp:
        json.dump(result, tmp, indent=2)
    os.replace(tmp.name, args.out / "bench_labeler.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
