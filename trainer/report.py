"""A self-contained HTML run report: reward curves, policy-vs-anchor grids, final metrics.

Everything is inline: curves are SVG drawn here, images are PNG ``data:`` URIs, styles are in the
page; no script and nothing fetched, so the file opens anywhere (and offline) as it is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrl.eval.evaluate import EvalGrid
from cxrl.infra.fileio import atomic_write_text

__all__ = ["EvalGrid", "metrics_table", "write_report"]

# (metric suffix, chart title); each chart draws policy/<suffix> and anchor/<suffix> per epoch.
REWARD_CHARTS: tuple[tuple[str, str], ...] = (
    ("total", "Total reward (RLCF)"),
    ("r_align", "Posture alignment r_align"),
    ("diag_acc", "Diagnostic accuracy acc(x)"),
    ("consistency", "Report consistency cos(Fv(x), Ft(y))"),
)
TRAIN_CHARTS: tuple[tuple[str, str], ...] = (
    ("approx_kl", "Approx. KL (policy vs sampling policy)"),
    ("clipfrac", "PPO clip fraction"),
    ("cache_hit_rate", "Anchor cache hit rate"),
)
# (metric, chart title): how much signal an epoch's report groups carried (cxrl.rl.engine.group_diagnostics)
GROUP_CHARTS: tuple[tuple[str, str], ...] = (
    ("zero_spread_groups", "Report groups with zero reward spread (no signal)"),
    ("group_size", "Images per report group"),
)
GRAD_PREFIX = "grad_eps/step_"  # gradient norm of the noise prediction by trajectory step (cxrl.rl.update)
PALETTE = ("#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#f39c12")
COLORS = {"policy": "#c0392b", "anchor": "#2c3e50"}


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    ticks, v = [], start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 12))
        v += step
    return ticks


def line_chart(
    title: str,
    series: dict[str, Sequence[tuple[float, float]]],
    width: int = 540,
    height: int = 260,
    styles: dict[str, str] | None = None,
) -> str:
    """An inline SVG line chart of named (x, y) series with axes, ticks and a legend."""
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    esc = html.escape
    head = f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
    head += f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
    parts = [head, f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{esc(title)}</text>']
    if not pts:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    left, right, top, bottom = 64, 16, 28, 44
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.1, 1e-3)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>')
    for t in _nice_ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    for t in _nice_ticks(x0, x1, 6):
        if abs(t - round(t)) < 1e-9:
            parts.append(
                f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{int(round(t))}</text>'
            )
    parts.append(f'<text x="{left + pw}" y="{height - 10}" text-anchor="end">epoch</text>')
    for i, (name, s) in enumerate(series.items()):
        color = (styles or {}).get(name) or COLORS.get(name.split("/")[0], "#7f8c8d")
        dash = ' stroke-dasharray="6 4"' if name.startswith("anchor") else ""
        good = [(x, y) for x, y in s if math.isfinite(y)]
        if good:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for x, y in good:
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
        step = min(170, (width - left) // max(1, len(series)))
        lx, ly = left + step * i, height - 10  # legend in the bottom margin, never over the data
        parts.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{lx + 28}" y="{ly}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _series(history: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for row in history:
        if key in row and row[key] is not None and "epoch" in row:
            out.append((float(row["epoch"]), float(row[key])))
    return out


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _grid_html(grids: Sequence[EvalGrid]) -> str:
    """One table: a row per held-out report; the anchor's image, then the policy's at each evaluation.

    The anchor is frozen and sampled from the same noise each time, so its column is shown once.
    """
    esc = html.escape
    first = grids[0]
    for g in grids[1:]:
        if g.reports != first.reports:
            raise ValueError(f"evaluation at epoch {g.epoch} used other reports than at epoch {first.epoch}")
    head = "<tr><th>held-out report</th><th>anchor</th>" + "".join(
        f"<th>CXRL, epoch {g.epoch}</th>" for g in grids
    )
    rows = [head + "</tr>"]
    for i, report in enumerate(first.reports):
        cells = [
            f'<td class="report">{esc(report)}</td>',
            f'<td><img alt="anchor {i}" src="{_data_uri(first.anchor_png[i])}"/></td>',
        ]
        cells += [
            f'<td><img alt="policy {i} epoch {g.epoch}" src="{_data_uri(g.policy_png[i])}"/></td>'
            for g in grids
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<div class="scroll"><table class="images">' + "".join(rows) + "</table></div>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return html.escape(str(value))


def metrics_table(final: dict[str, dict[str, Any]]) -> str:
    """Rows = metric names, columns = models (e.g. anchor, cxrl)."""
    models = list(final)
    names: list[str] = []
    for values in final.values():
        names += [k for k in values if k not in names]
    head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in models) + "</tr>"
    body = "".join(
        f"<tr><td>{html.escape(n)}</td>"
        + "".join(f"<td>{_fmt(final[m].get(n, ''))}</td>" for m in models)
        + "</tr>"
        for n in names
    )
    return f'<table class="metrics">{head}{body}</table>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1140px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #ddd;font-size:11px}
svg .title{font-size:13px;font-weight:600} svg .plot{fill:#fafafa;stroke:#bbb}
svg .grid{stroke:#e4e4e4}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
table.images img{width:128px;height:128px;image-rendering:pixelated;display:block}
td.report{min-width:220px;max-width:320px;font-size:12px}
.scroll{overflow-x:auto}
.meta{font-size:12px;color:#555}
"""


def render_report(
    title: str,
    history: Sequence[dict[str, Any]],
    grids: Sequence[EvalGrid] = (),
    final: dict[str, dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """The report page as one HTML string."""
    esc = html.escape
    reward = [
        line_chart(
            name,
            {f"policy/{k}": _series(history, f"policy/{k}"), f"anchor/{k}": _series(history, f"anchor/{k}")},
        )
        for k, name in REWARD_CHARTS
    ]
    train = [line_chart(name, {k: _series(history, k)}, styles={k: "#8e44ad"}) for k, name in TRAIN_CHARTS]
    train += [line_chart(name, {k: _series(history, k)}, styles={k: "#16a085"}) for k, name in GROUP_CHARTS]
    steps = sorted({k for row in history for k in row if k.startswith(GRAD_PREFIX)})
    if steps:  # only trained steps appear: all of them for DDPO, the window's under a windowed recipe
        names = {k: f"step {k[len(GRAD_PREFIX) :]}" for k in steps}
        train.append(
            line_chart(
                "Gradient norm of the noise prediction, by trajectory step",
                {names[k]: _series(history, k) for k in steps},
                styles={names[k]: PALETTE[i % len(PALETTE)] for i, k in enumerate(steps)},
            )
        )
    meta_html = "".join(f"<li><b>{esc(str(k))}</b>: {esc(str(v))}</li>" for k, v in (meta or {}).items())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1><ul class='meta'>{meta_html}</ul>",
    ]
    if final:
        parts.append("<h2>Final metrics (held-out reports)</h2>" + metrics_table(final))
    if grids:
        parts.append("<h2>Anchor vs CXRL policy on fixed held-out reports (same noise)</h2>")
        parts.append(_grid_html(grids))
    parts.append("<h2>Rewards per epoch: policy (solid) vs anchor (dashed)</h2>")
    parts.append('<div class="charts">' + "".join(reward) + "</div>")
    parts.append("<h2>Optimisation</h2><div class='charts'>" + "".join(train) + "</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(path: str | Path, **kwargs: Any) -> Path:
    """Render and write atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, render_report(**kwargs))
