"""The paper's Table 1 and Table 2 as markdown and JSON, each row with its paired difference to the anchor.

Table 1 (CXR-specific quality): the combined reward's difference to the anchor, posture
alignment ``r_align`` (higher is better, 0 is perfect), classification AUROC, CXR-CLIP
image-report cosine similarity.
Table 2a (image quality): FID on xrv DenseNet features (lower is better) and MS-SSIM
among images of one prompt (lower = more diverse).
Table 2b (reward ablation): FID of the anchor and of CXRL trained with each reward
alone and with all three.

A value cell is ``value [low, high]`` (bootstrap interval over prompts) for one run, or
``value ± sd`` over training seeds (the mean interval kept in the JSON) for several. A Δ cell is
the paired difference row − anchor on the same (report, seed) pairs with its bootstrap interval
(:func:`cxrl.eval.scores.paired_difference`), and ``sd`` over training seeds where there are several.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrl.eval.bootstrap import Estimate
from cxrl.infra.fileio import atomic_write_text

METRICS: dict[str, str] = {
    "reward_total": "Combined reward (↑)",
    "r_align": "Posture alignment r_align (↑)",
    "auroc": "Classification AUROC (↑)",
    "clip_similarity": "CXR-CLIP similarity (↑)",
    "diag_acc": "Diagnostic accuracy (↑)",
    "fid": "FID (↓)",
    "msssim": "MS-SSIM (↓)",
}
SHORT: dict[str, str] = {
    "reward_total": "combined reward",
    "r_align": "r_align",
    "auroc": "AUROC",
    "clip_similarity": "CXR-CLIP",
    "diag_acc": "accuracy",
    "fid": "FID",
    "msssim": "MS-SSIM",
}
TABLE1: tuple[str, ...] = ("r_align", "auroc", "clip_similarity")
TABLE2A: tuple[str, ...] = ("fid", "msssim")


@dataclass
class Row:
    """One generator's metrics (keys of METRICS; a missing key is shown as n/a)."""

    name: str
    metrics: dict[str, Estimate]
    info: dict[str, Any] = field(default_factory=dict)  # e.g. images, prompts, seeds, spec
    diff: dict[str, Estimate] | None = None  # paired row − anchor per metric; None = not compared


@dataclass
class AblationRow:
    """One line of Table 2b: experiment number, reward description, and the row it reads FID from."""

    exp: str  # "-" for the anchor, "1".."4"
    reward: str  # e.g. "+ r_align"
    row: Row


def format_estimate(est: Estimate | None, digits: int = 3) -> str:
    if est is None or not math.isfinite(est.value):
        return "n/a"
    value = f"{est.value:.{digits}f}"
    if est.n_seeds is not None and est.n_seeds > 1 and est.sd is not None:
        return f"{value} ± {est.sd:.{digits}f}"
    if math.isfinite(est.low) and math.isfinite(est.high):
        return f"{value} [{est.low:.{digits}f}, {est.high:.{digits}f}]"
    return value


def format_difference(row: Row, metric: str, digits: int = 3) -> str:
    """The Δ cell: ``+d [+low, +high]`` (and ``sd`` over seeds); ``—`` for the anchor itself."""
    if row.diff is None:
        return "—"
    est = row.diff.get(metric)
    if est is None or not math.isfinite(est.value):
        return "n/a"
    text = f"{est.value:+.{digits}f}"
    if math.isfinite(est.low) and math.isfinite(est.high):
        text += f" [{est.low:+.{digits}f}, {est.high:+.{digits}f}]"
    if est.n_seeds is not None and est.n_seeds > 1 and est.sd is not None:
        text += f" sd {est.sd:.{digits}f}"
    return text


def markdown_table(
    rows: Sequence[Row], metrics: Sequence[str], first: str = "Method", lead: Sequence[str] = ()
) -> str:
    """One row per generator: ``lead`` metrics as Δ only, then each metric's value and Δ."""
    unknown = [m for m in (*lead, *metrics) if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    header = [first] + [f"Δ {SHORT[m]} vs anchor" for m in lead]
    header += [h for m in metrics for h in (METRICS[m], f"Δ {SHORT[m]}")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.name] + [format_difference(row, m) for m in lead]
        cells += [
            c for m in metrics for c in (format_estimate(row.metrics.get(m)), format_difference(row, m))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_table(rows: Sequence[AblationRow]) -> str:
    lines = ["| Exp. # | Reward | FID (↓) | Δ FID | Δ combined reward |", "|---|---|---|---|---|"]
    for r in rows:
        fid, diff = format_estimate(r.row.metrics.get("fid")), format_difference(r.row, "fid")
        lines.append(
            f"| {r.exp} | {r.reward} | {fid} | {diff} | {format_difference(r.row, 'reward_total')} |"
        )
    return "\n".join(lines)


def _having(rows: Sequence[Row], metrics: Sequence[str]) -> list[Row]:
    """Rows with at least one of ``metrics`` (e.g. the real-image row has no FID or MS-SSIM)."""
    return [r for r in rows if any(m in r.metrics for m in metrics)]


def _caption(rows: Sequence[Row]) -> str:
    seeds = {r.info.get("n_seeds") for r in rows} - {None}
    conf = next((e.confidence for r in rows for e in r.metrics.values()), 0.95)
    delta = (
        f"Δ: paired difference to the anchor on the same (report, seed) pairs [{conf:.0%} bootstrap "
        "interval over prompts]"
    )
    if seeds and max(seeds) > 1:
        return (
            "Values: mean ± standard deviation over training seeds (a row evaluated once, e.g. the anchor: "
            f"value [{conf:.0%} bootstrap interval over prompts]). {delta}, mean over training seeds, sd over them."
        )
    return f"Values: value [{conf:.0%} bootstrap interval over prompts]. {delta}."


def tables_markdown(
    rows: Sequence[Row], ablation: Sequence[AblationRow] = (), meta: dict[str, Any] | None = None
) -> str:
    """All tables as one markdown document."""
    if not rows:
        raise ValueError("no generator results to tabulate")
    parts = ["# CXRL evaluation", ""]
    if meta:
        parts += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    parts += [_caption(rows), ""]
    parts += [
        "## Table 1. CXR-specific quality",
        "",
        markdown_table(_having(rows, TABLE1), TABLE1, lead=("reward_total",)),
        "",
    ]
    t2a = _having(rows, TABLE2A)
    if t2a:
        parts += ["## Table 2a. Image quality", "", markdown_table(t2a, TABLE2A, first="Model"), ""]
    if ablation:
        parts += ["## Table 2b. Ablation: reward feedback models", "", ablation_table(ablation), ""]
    return "\n".join(parts)


def _row_json(row: Row) -> dict[str, Any]:
    diff = None if row.diff is None else {k: v.to_dict() for k, v in row.diff.items()}
    return {
        "name": row.name,
        "metrics": {k: v.to_dict() for k, v in row.metrics.items()},
        "diff": diff,
        "info": row.info,
    }


def tables_json(
    rows: Sequence[Row], ablation: Sequence[AblationRow] = (), meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Machine-readable tables: every row with all its metrics, and the table layouts."""
    return {
        "meta": meta or {},
        "rows": [_row_json(r) for r in rows],
        "table1": {"metrics": list(TABLE1), "rows": [r.name for r in rows]},
        "table2a": {"metrics": list(TABLE2A), "rows": [r.name for r in rows]},
        "table2b": [{"exp": a.exp, "reward": a.reward, "row": a.row.name} for a in ablation],
    }


def rows_from_json(data: dict[str, Any]) -> list[Row]:
    """Inverse of the ``rows`` part of :func:`tables_json`."""

    def estimates(d: dict[str, Any] | None) -> dict[str, Estimate] | None:
        return None if d is None else {k: Estimate.from_dict(v) for k, v in d.items()}

    return [
        Row(r["name"], estimates(r["metrics"]), dict(r.get("info", {})), estimates(r.get("diff")))
        for r in data["rows"]
    ]


def write_tables(
    rows: Sequence[Row],
    ablation: Sequence[AblationRow] = (),
    meta: dict[str, Any] | None = None,
    markdown_path: str | Path | None = None,
    json_path: str | Path | None = None,
) -> str:
    """Write the requested outputs atomically; returns the markdown."""
    text = tables_markdown(rows, ablation, meta)
    if markdown_path is not None:
        atomic_write_text(markdown_path, text)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(tables_json(rows, ablation, meta), indent=1, allow_nan=False))
    return text
