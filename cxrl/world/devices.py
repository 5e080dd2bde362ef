"""Support devices drawn as dense (metal / contrast-striped plastic) structures.

Kinds: endotracheal tube (two parallel walls down the trachea ending above the
carina), central venous line (thin line from a subclavian / jugular entry into the
superior vena cava), pacemaker (a bright rounded can below the clavicle with leads
curving into the heart), sternal wires (small twisted loops down the midline) and a
nasogastric tube (down the midline, below the left hemidiaphragm). A report that
mentions support devices gets one to three of them.
"""

from __future__ import annotations

import numpy as np

from cxrl.world.anatomy import Anatomy, band, smoothstep


def polyline_distance(a: Anatomy, points: np.ndarray, pad: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Distance from the pixels of the polyline's bounding box (+pad) to the polyline ``points [K, 2]`` (x, y)."""
    g = a.grid
    lo = points.min(0) - pad
    hi = points.max(0) + pad
    to_px = lambda v: int(np.clip((v / g.margin + 1) * g.c / 2, 0, g.c))  # noqa: E731
    rows = slice(to_px(lo[1]), max(to_px(hi[1]), to_px(lo[1]) + 1))
    cols = slice(to_px(lo[0]), max(to_px(hi[0]), to_px(lo[0]) + 1))
    x, y = g.x[rows, cols], g.y[rows, cols]
    best = np.full(x.shape, np.inf, np.float32)
    for p, q in zip(points[:-1], points[1:], strict=True):
        d = q - p
        t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
        best = np.minimum(best, np.hypot(x - p[0] - t * d[0], y - p[1] - t * d[1]))
    return best, (rows, cols)


def _curve(points: list[tuple[float, float]], n: int = 24) -> np.ndarray:
    """A smooth polyline through control points (quadratic B-spline-like corner cutting)."""
    pts = np.asarray(points, np.float32)
    for _ in range(3):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        mid = np.empty((2 * len(q), 2), np.float32)
        mid[0::2], mid[1::2] = q, r
        pts = np.vstack([pts[:1], mid, pts[-1:]])
    return pts


def _draw(a: Anatomy, pts: np.ndarray, half: float, value: float, hollow: bool = False) -> None:
    dist, (rows, cols) = polyline_distance(a, pts, half + 0.02)
    if hollow:  # a tube: two bright walls
        stroke = band(dist - half, 0.004, 0.003)
    else:
        stroke = band(dist, half, 0.004)
    a.extra[rows, cols] += value * stroke


def et_tube(a: Anatomy, rng) -> None:
    tip = -0.32 + rng.uniform(-0.05, 0.05)
    pts = _curve([(0.0, -1.3), (0.01, -0.9), (0.0, tip)])
    _draw(a, pts, 0.018, 0.35, hollow=True)


def central_line(a: Anatomy, rng) -> None:
    s = int(rng.choice((-1, 1)))
    entry = (s * rng.uniform(0.45, 0.6), -0.78)
    pts = _curve(
        [entry, (s * 0.25, -0.62), (0.03 * s - 0.04, -0.45), (-0.04, -0.18 + rng.uniform(-0.05, 0.05))]
    )
    _draw(a, pts, 0.007, 0.8)


def pacemaker(a: Anatomy, rng) -> None:
    s = 1 if rng.random() < 0.8 else -1
    cx, cy = s * rng.uniform(0.45, 0.6), rng.uniform(-0.72, -0.6)
    w, h = 0.1, 0.07
    r = np.maximum(np.abs(a.grid.x - cx) / w, np.abs(a.grid.y - cy) / h)
    a.extra += 1.2 * (1 - smoothstep(0.85, 1.0, r))
    hx0, hx1, hy0, hy1 = a.heart_box
    for k in range(int(rng.integers(1, 3))):
        end = (hx0 + (0.3 + 0.3 * k) * (hx1 - hx0), hy0 + (0.55 + 0.25 * k) * (hy1 - hy0))
        pts = _curve([(cx - s * 0.05, cy + 0.02), (s * 0.2, -0.55), (-0.05, -0.3), (-0.02, 0.0), end])
        _draw(a, pts, 0.005, 0.7)


def sternal_wires(a: Anatomy, rng) -> None:
    n = int(rng.integers(4, 7))
    for yc in np.linspace(-0.5, 0.1, n):
        cx = rng.uniform(-0.02, 0.03)
        rx, ry = 0.03 + 0.005 * rng.standard_normal(), 0.014
        r = np.hypot((a.grid.x - cx) / rx, (a.grid.y - yc) / ry)
        a.extra += 1.2 * band(r - 1.0, 0.3, 0.15)


def ng_tube(a: Anatomy, rng) -> None:
    base = float(np.percentile(a.grid.y[a.lungs == 2], 99))
    pts = _curve([(0.02, -1.3), (0.03, -0.5), (0.04, base - 0.05), (0.25, base + 0.12), (0.35, base + 0.15)])
    _draw(a, pts, 0.007, 0.45)


DEVICES = {
    "et_tube": et_tube,
    "central_line": central_line,
    "pacemaker": pacemaker,
    "sternal_wires": sternal_wires,
    "ng_tube": ng_tube,
}


def support_devices(a: Anatomy, strength: float, rng) -> list[str]:
    """Draw one to three random devices; returns their kinds (recorded in the metadata)."""
    k = int(rng.integers(1, 4))
    kinds = sorted(rng.choice(list(DEVICES), size=k, replace=False).tolist())
    before = a.extra.copy()
    for kind in kinds:
        DEVICES[kind](a, rng)
    a.extra = before + strength * (a.extra - before)
    return kinds
