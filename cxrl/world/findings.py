"""Findings drawn into the density layers of ``anatomy.py``, where the report puts them.

Each label of the vocabulary (cxrl.labels) that is visible on a frontal radiograph has
a renderer ``draw(anatomy, side, strength, rng)``. ``side`` is -1 for the patient's
RIGHT (image left), +1 for the patient's LEFT (image right), 0 for both (bilateral);
``strength`` is 1 for a positive mention and 0.5 for an uncertain one rendered at
reduced intensity. Some findings change the anatomy itself before it is drawn
(``adjust``): cardiomegaly enlarges the heart, emphysema hyperinflates the lungs,
fracture breaks a rib.

What each looks like (the textbook frontal appearance, simplified):
cardiomegaly (cardiothoracic ratio 0.55-0.66), enlarged cardiomediastinum (widened
upper mediastinum), effusion (basal fluid with a meniscus rising laterally, blunted
costophrenic angle), pneumothorax (apicolateral lucency without markings behind a thin
visceral pleural line), consolidation / pneumonia (dense lobar patch with air
bronchograms), lung opacity (hazy patch), infiltration (patchy multifocal haze),
atelectasis (plate-like basal bands, raised hemidiaphragm), edema (bilateral perihilar
haze, Kerley B lines), nodule (small round densities), mass (large lobulated density),
lung lesion (either), emphysema (hyperlucent, hyperinflated lungs, sparse markings),
fibrosis (peripheral basal reticulation), pleural thickening (band along the chest
wall and apical cap), fracture (gap and step in a rib), hernia (retrocardiac air-fluid
level), support devices (endotracheal tube, central line, pacemaker with leads,
sternal wires, nasogastric tube).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from cxrl.world.anatomy import Anatomy, AnatomyParams, band, gaussian, smooth_noise, smoothstep

Renderer = Callable[[Anatomy, int, float, np.random.Generator], None]

BILATERAL = 0


def sides(side: int) -> tuple[int, ...]:
    return (-1, 1) if side == BILATERAL else (side,)


def _in_lung(a: Anatomy, side: int, grow: float = 0.0) -> np.ndarray:
    m = a.lung(side).astype(np.float32)
    if grow > 0:
        m = gaussian(m, grow / a.grid.px)
        m = np.clip(m * 2, 0, 1)
    return m


def _blob(
    a: Anatomy, cx: float, cy: float, rx: float, ry: float, rng, lobulated: float = 0.0, soft: float = 0.2
) -> np.ndarray:
    r = np.hypot((a.grid.x - cx) / rx, (a.grid.y - cy) / ry)
    if lobulated > 0:
        ang = np.arctan2(a.grid.y - cy, a.grid.x - cx)
        k, ph = rng.integers(3, 6), rng.uniform(0, 2 * np.pi, size=2)
        r = r / (1 + lobulated * (np.sin(k * ang + ph[0]) * 0.6 + np.sin((k + 2) * ang + ph[1]) * 0.4))
    return 1 - smoothstep(1.0 - soft, 1.0, r)


def _point_in_lung(a: Anatomy, side: int, rng, zone: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """A random pixel centre of one lung, within a vertical zone (0 = apex, 1 = base)."""
    m = a.lung(side)
    ys = a.grid.y[m]
    lo, hi = np.quantile(ys, zone[0]), np.quantile(ys, zone[1])
    idx = np.flatnonzero(m & (a.grid.y >= lo) & (a.grid.y <= hi))
    if idx.size == 0:
        idx = np.flatnonzero(m)
    k = idx[rng.integers(idx.size)]
    return float(a.grid.x.flat[k]), float(a.grid.y.flat[k])


def _patch(a: Anatomy, side: int, strength: float, rng, cells: int, coverage: float, zone, density: float):
    for s in sides(side):
        cx, cy = _point_in_lung(a, s, rng, zone)
        rx, ry = rng.uniform(0.16, 0.28), rng.uniform(0.13, 0.22)
        r = np.hypot((a.grid.x - cx) / rx, (a.grid.y - cy) / ry)
        region = np.exp(-(r**2) * 1.6)  # soft, ill-defined margins
        field = smooth_noise(rng, a.grid.c, cells) + 2.5 * region - 2.5 * (1 - coverage) - 0.6
        patch = smoothstep(-1.0, 1.2, field) * region * _in_lung(a, s, 0.02)
        a.opac += density * strength * patch
        a.marks *= 1 - 0.5 * patch


def consolidation(a: Anatomy, side: int, strength: float, rng) -> None:
    _patch(a, side, strength, rng, cells=10, coverage=1.2, zone=(0.35, 1.0), density=1.0)
    # air bronchograms: dark branching lines inside the densest part
    n = smooth_noise(rng, a.grid.c, 24)
    a.opac -= 0.25 * strength * np.exp(-((n / 0.12) ** 2)) * (a.opac > 0.5)


def opacity(a: Anatomy, side: int, strength: float, rng) -> None:
    _patch(a, side, strength, rng, cells=12, coverage=0.8, zone=(0.2, 1.0), density=0.55)


def infiltration(a: Anatomy, side: int, strength: float, rng) -> None:
    for _ in range(2):
        _patch(a, side, strength, rng, cells=22, coverage=0.6, zone=(0.1, 1.0), density=0.45)


def effusion(a: Anatomy, side: int, strength: float, rng) -> None:
    for s in sides(side):
        x0, x1, y0, y1 = a.lung_bbox(s)
        lateral = np.clip((s * a.grid.x - min(s * x0, s * x1)) / (x1 - x0), 0, 1)  # 0 medial, 1 lateral
        height = (y1 - y0) * rng.uniform(0.12, 0.35) * (0.6 + 0.4 * strength)
        level = y1 - height - 0.12 * lateral**2  # meniscus rising laterally
        fluid = smoothstep(level - 0.03, level + 0.05, a.grid.y) * _in_lung(a, s, 0.015)
        a.opac += strength * fluid * (0.7 + 0.3 * smoothstep(level, y1, a.grid.y))
        a.marks *= 1 - fluid


def pneumothorax(a: Anatomy, side: int, strength: float, rng) -> None:
    for s in sides(side):
        m = a.lung(s)
        depth = rng.uniform(0.08, 0.18) * (0.6 + 0.4 * strength)
        dist = ndimage.distance_transform_edt(m) * a.grid.px
        x0, x1, y0, y1 = a.lung_bbox(s)
        upper = 1 - smoothstep(y0 + 0.5 * (y1 - y0), y0 + 0.75 * (y1 - y0), a.grid.y)
        centre = 0.5 * abs(x0 + x1)
        apex = 1 - smoothstep(y0 + 0.15 * (y1 - y0), y0 + 0.3 * (y1 - y0), a.grid.y)
        medial = np.maximum(smoothstep(centre - 0.05, centre + 0.05, s * a.grid.x), apex)  # apicolateral only
        gas = (dist < depth) * m * upper * medial
        gas = gaussian(gas.astype(np.float32), 0.004 / a.grid.px)
        a.marks *= 1 - gas
        a.air += 0.3 * strength * gas
        a.opac += 0.06 * strength * (dist >= depth) * m  # the collapsed lung is a little denser
        line = band(dist - depth, 0.004, 0.004) * m * upper * medial
        a.extra += 0.2 * strength * line


def atelectasis(a: Anatomy, side: int, strength: float, rng) -> None:
    for s in sides(side):
        x0, x1, y0, y1 = a.lung_bbox(s)
        for _ in range(rng.integers(1, 3)):
            yc = y1 - rng.uniform(0.08, 0.25) * (y1 - y0)
            tilt = rng.uniform(-0.15, 0.15)
            line = band(a.grid.y - yc - tilt * (a.grid.x - 0.5 * (x0 + x1)), 0.012, 0.025)
            a.opac += 0.55 * strength * line * _in_lung(a, s, 0.01)
        base = smoothstep(y1 - 0.06, y1, a.grid.y) * _in_lung(a, s, 0.01)  # raised hemidiaphragm
        a.opac += 0.9 * strength * base


def edema(a: Anatomy, side: int, strength: float, rng) -> None:
    lungs = (a.lungs > 0).astype(np.float32)
    for s in (-1, 1):
        r = np.hypot((a.grid.x - s * 0.22) / 0.3, (a.grid.y + 0.02) / 0.35)
        a.opac += 0.5 * strength * np.exp(-(r**2)) * lungs * (0.8 + 0.2 * smooth_noise(rng, a.grid.c, 8))
        # Kerley B lines: short horizontal lines at the lateral bases
        x0, x1, y0, y1 = a.lung_bbox(s)
        xl = x1 if s > 0 else x0
        for _ in range(5):
            yk = y1 - rng.uniform(0.05, 0.3)
            seg = band(a.grid.y - yk, 0.004, 0.003) * band(a.grid.x - (xl - s * 0.04), 0.04, 0.01)
            a.opac += 0.5 * strength * seg * lungs
    a.marks *= 1 + 0.5 * strength  # vascular congestion


def nodule(a: Anatomy, side: int, strength: float, rng) -> None:
    for s in sides(side):
        for _ in range(rng.integers(1, 3)):
            cx, cy = _point_in_lung(a, s, rng, (0.1, 0.9))
            r = rng.uniform(0.025, 0.045)
            blob = _blob(a, cx, cy, r * 1.15, r * 1.15, rng, soft=0.45)
            a.opac += (0.5 + 0.4 * strength) * blob
            a.extra += 0.04 * strength * blob


def mass(a: Anatomy, side: int, strength: float, rng) -> None:
    for s in sides(side):
        cx, cy = _point_in_lung(a, s, rng, (0.15, 0.8))
        r = rng.uniform(0.08, 0.13) * (0.7 + 0.3 * strength)
        blob = _blob(a, cx, cy, r, r * rng.uniform(0.8, 1.1), rng, 0.12, soft=0.35)
        a.opac += (0.6 + 0.4 * strength) * blob
        a.extra += 0.1 * strength * blob


def lung_lesion(a: Anatomy, side: int, strength: float, rng) -> None:
    (nodule if rng.random() < 0.6 else mass)(a, side, strength, rng)


def emphysema(a: Anatomy, side: int, strength: float, rng) -> None:
    a.air *= 1 + 0.25 * strength
    a.marks *= 1 - 0.5 * strength
    for s in (-1, 1):  # apical bullae: round lucencies with a thin wall
        cx, cy = _point_in_lung(a, s, rng, (0.0, 0.35))
        r = rng.uniform(0.05, 0.09)
        blob = _blob(a, cx, cy, r, r, rng)
        a.marks *= 1 - blob
        a.extra += 0.06 * strength * band(np.hypot(a.grid.x - cx, a.grid.y - cy) - r * 0.9, 0.003, 0.004)


def fibrosis(a: Anatomy, side: int, strength: float, rng) -> None:
    n = smooth_noise(rng, a.grid.c, 40)
    ridges = np.exp(-((n / 0.25) ** 2))
    for s in sides(side):
        dist = ndimage.distance_transform_edt(a.lung(s)) * a.grid.px
        x0, x1, y0, y1 = a.lung_bbox(s)
        where = (1 - smoothstep(0.05, 0.2, dist)) * smoothstep(y0, y1, a.grid.y) * a.lung(s)
        a.opac += 0.7 * strength * ridges * where


def pleural_thickening(a: Anatomy, side: int, strength: float, rng) -> None:
    for s in sides(side):
        dist = ndimage.distance_transform_edt(a.lung(s)) * a.grid.px
        x0, x1, y0, y1 = a.lung_bbox(s)
        lateral = smoothstep(0.2, 0.4, s * a.grid.x) + (1 - smoothstep(y0, y0 + 0.15, a.grid.y))
        width = max(rng.uniform(0.015, 0.03), 1.5 * a.grid.px)  # at least a pixel and a half wide
        a.opac += 0.9 * strength * (dist > 0) * (dist < width) * np.clip(lateral, 0, 1)


def enlarged_cardiomediastinum(a: Anatomy, side: int, strength: float, rng) -> None:
    w = 0.14 + 0.12 * strength * rng.uniform(0.7, 1.0)
    wide = (
        band(a.grid.x - 0.02, w, 0.03)
        * smoothstep(-0.7, -0.55, a.grid.y)
        * (1 - smoothstep(0.0, 0.15, a.grid.y))
    )
    a.air *= 1 - 0.85 * wide


def hernia(a: Anatomy, side: int, strength: float, rng) -> None:
    hx0, hx1, hy0, hy1 = a.heart_box
    cx, cy = 0.5 * (hx0 + hx1) - 0.05, hy0 + 0.6 * (hy1 - hy0)
    r = rng.uniform(0.07, 0.11)
    blob = _blob(a, cx, cy, r * 1.2, r, rng)
    level = cy + rng.uniform(-0.2, 0.2) * r
    gas = blob * (a.grid.y < level)
    a.air += 0.35 * strength * gas
    a.extra += 0.1 * strength * band(np.hypot((a.grid.x - cx) / 1.2, a.grid.y - cy) - r, 0.003, 0.004)


def fracture_adjust(p: AnatomyParams, side: int, strength: float, rng) -> None:
    s = int(rng.choice((-1, 1))) if side == BILATERAL else side
    p.rib_break = (s, float(rng.uniform(0.35, 0.6)), int(rng.integers(3, 8)))


def cardiomegaly_adjust(p: AnatomyParams, side: int, strength: float, rng) -> None:
    p.ctr = float(0.5 + strength * rng.uniform(0.06, 0.16))


def emphysema_adjust(p: AnatomyParams, side: int, strength: float, rng) -> None:
    p.lung_stretch = float(1 + strength * rng.uniform(0.05, 0.1))


def nothing(a: Anatomy, side: int, strength: float, rng) -> None:
    """Findings whose whole appearance is an anatomy change (``ADJUSTERS``)."""


Adjuster = Callable[[AnatomyParams, int, float, np.random.Generator], None]

# label -> change of the patient's anatomy before drawing
ADJUSTERS: dict[str, Adjuster] = {
    "Cardiomegaly": cardiomegaly_adjust,
    "Emphysema": emphysema_adjust,
    "Fracture": fracture_adjust,
}

# label -> renderer into the density layers; "Support Devices" lives in devices.py
RENDERERS: dict[str, Renderer] = {
    "Atelectasis": atelectasis,
    "Consolidation": consolidation,
    "Infiltration": infiltration,
    "Pneumothorax": pneumothorax,
    "Edema": edema,
    "Emphysema": emphysema,
    "Fibrosis": fibrosis,
    "Effusion": effusion,
    "Pneumonia": consolidation,
    "Pleural_Thickening": pleural_thickening,
    "Cardiomegaly": nothing,
    "Nodule": nodule,
    "Mass": mass,
    "Hernia": hernia,
    "Lung Lesion": lung_lesion,
    "Fracture": nothing,
    "Lung Opacity": opacity,
    "Enlarged Cardiomediastinum": enlarged_cardiomediastinum,
}
