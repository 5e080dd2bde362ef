"""Normal frontal (PA) chest anatomy as density layers on the canonical canvas.

The world renders a radiograph as an attenuation map ``A`` turned into brightness
``I = 1 - exp(-k A)`` (bright = dense, as on film). ``A`` is the sum of layers that
this module draws around a real lung mask (``masks.py``) and that ``findings.py``
modifies:

- ``soft``    soft tissue path length: the trunk (thicker at the midline), shoulders,
              neck, arms at the canvas edges, breast shadows; the heart and the
              mediastinum are where no lung air is.
- ``air``     lung aeration in [0, 1]: the real lung mask, softened, less where the
              heart and great vessels lie in front of it; the trachea, main bronchi
              and the gastric bubble.
- ``marks``   lung markings: vessel-like ridges, densest at the hila, fading outwards.
- ``bone``    spine (vertebral bodies, pedicles), posterior and anterior ribs (curved
              bands with brighter cortex), clavicles.
- ``opac``    extra density in [0, 1] replacing air (findings: consolidation, fluid ...).
- ``extra``   extra density added on top (devices, dense lesions).

Coordinates: normalised canvas coordinates, x to the image right, y downwards; the
unposed image is the window [-1, 1]^2 of a canvas spanning [-margin, margin]^2.
Radiographic convention: the patient's RIGHT is on the image LEFT (x < 0), so the
heart bulges to x > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass
class Grid:
    """Pixel-centre coordinates of a ``c x c`` canvas spanning [-margin, margin]^2."""

    c: int
    margin: float
    x: np.ndarray = field(init=False)  # [c, c] float32
    y: np.ndarray = field(init=False)  # [c, c] float32
    px: float = field(init=False)  # size of one pixel in normalised units

    def __post_init__(self) -> None:
        v = ((2 * np.arange(self.c, dtype=np.float32) + 1) / self.c - 1) * self.margin
        self.y, self.x = np.meshgrid(v, v, indexing="ij")
        self.px = 2 * self.margin / self.c

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Row and column slices of the pixels whose centres lie in [x0, x1] x [y0, y1]."""

        def idx(v: float) -> int:
            return int(np.clip(np.floor((v / self.margin + 1) * self.c / 2), 0, self.c))

        return slice(idx(y0), max(idx(y1) + 1, idx(y0) + 1)), slice(idx(x0), max(idx(x1) + 1, idx(x0) + 1))


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(np.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[1, 1, H, W]`` with ``sigma`` in pixels (reflect padding)."""
    k = _gauss_kernel(sigma)
    r = k.numel() // 2
    x = F.pad(image, (r, r, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1))


def gaussian(field: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of ``[c, c]`` float32; wide kernels run on a downsampled copy (fast, smooth result)."""
    t = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None, None]
    f = max(1, int(sigma_px // 3))
    if f > 1:
        t = F.avg_pool2d(t, f, ceil_mode=True)
        sigma_px = float(np.sqrt(max(sigma_px**2 - f**2 / 4, 0.25))) / f
    t = blur(t, sigma_px)
    if f > 1:
        t = F.interpolate(t, size=field.shape, mode="bilinear", align_corners=False)
    return t[0, 0].numpy()


def smooth_noise(rng: np.random.Generator, c: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std smooth random field ``[c, c]`` with about ``cells`` features across."""
    n = torch.from_numpy(rng.standard_normal((1, 1, cells + 3, cells + 3)).astype(np.float32))
    up = F.interpolate(n, size=(c + 3 * c // cells, c + 3 * c // cells), mode="bicubic", align_corners=False)
    off = (3 * c // cells) // 2
    out = up[0, 0, off : off + c, off : off + c].numpy()
    return (out - out.mean()) / (out.std() + 1e-6)


def smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def band(dist: np.ndarray, half_width: float, soft: float) -> np.ndarray:
    """1 inside ``|dist| < half_width``, falling smoothly to 0 over ``soft``."""
    return 1.0 - smoothstep(half_width, half_width + soft, np.abs(dist))


@dataclass
class AnatomyParams:
    """Random anatomy of one patient (canonical frame units)."""

    ctr: float  # cardiothoracic ratio: heart width / thoracic width (normal 0.40-0.50)
    heart_shift: float  # heart centre to the patient's left (image right)
    mediastinum: float  # half-width of the upper mediastinum
    body_width: float  # trunk half-width relative to the lungs' half-width
    rib_phase: float  # vertical phase of the rib cage in rib periods
    rib_count: float  # posterior ribs between apex and base
    clavicle_y: float  # height of the clavicles' medial ends
    breast: float  # breast shadow strength (0 = none)
    gastric_bubble: float  # gastric air bubble strength (0 = none)
    marks: float  # lung marking strength
    lung_stretch: float = 1.0  # vertical lung stretch (hyperinflation > 1)
    rib_break: tuple[int, float, int] | None = None  # (side -1/+1, lateral distance, rib index) of a fracture

    @staticmethod
    def sample(rng: np.random.Generator) -> AnatomyParams:
        """Draw a patient. The frame-defining anatomy (trunk outline, rib cage, clavicles) varies
        only a little around the lung box: posture must be recoverable from the image by
        alignment to the mean chest, or the posture reward cannot be learnt without labels.
        Wider ranges (body width 1.14-1.26, clavicles -0.70..-0.60, rib phase +-0.15, rib count
        9.2-10.2) capped the alignment-only posture at Spearman 0.75-0.77 even with psi fitted per
        image (docs/results/posture-default-world.md)."""
        return AnatomyParams(
            ctr=float(rng.uniform(0.40, 0.49)),
            heart_shift=float(rng.uniform(0.06, 0.12)),
            mediastinum=float(rng.uniform(0.1, 0.14)),
            body_width=float(rng.uniform(1.19, 1.21)),
            rib_phase=float(rng.uniform(-0.03, 0.03)),
            rib_count=float(rng.uniform(9.6, 9.8)),
            clavicle_y=float(rng.uniform(-0.66, -0.64)),
            breast=float(rng.uniform(0.0, 1.0)) if rng.random() < 0.4 else 0.0,
            gastric_bubble=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.6 else 0.0,
            marks=float(rng.uniform(0.8, 1.2)),
        )


@dataclass
class Anatomy:
    """Geometry derived from the lung mask plus the density layers (all ``[c, c]`` float32)."""

    grid: Grid
    lungs: np.ndarray  # [c, c] uint8: 0 none, 1 right lung (image left), 2 left lung (image right)
    heart: np.ndarray  # [c, c] float32 heart silhouette in [0, 1]
    heart_box: tuple[float, float, float, float]  # x0, x1, y0, y1 of the heart
    thorax: tuple[float, float]  # x of the lateral lung edges (image left, image right)
    soft: np.ndarray
    air: np.ndarray
    marks: np.ndarray
    bone: np.ndarray
    opac: np.ndarray
    extra: np.ndarray

    def lung(self, side: int) -> np.ndarray:
        """bool mask of one lung: side -1 = image left (patient right), +1 = image right."""
        return self.lungs == (1 if side < 0 else 2)

    def lung_bbox(self, side: int) -> tuple[float, float, float, float]:
        m = self.lung(side)
        xs, ys = self.grid.x[m], self.grid.y[m]
        return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())


def stretch_lungs(lungs: np.ndarray, grid: Grid, factor: float) -> np.ndarray:
    """Stretch the label map vertically about the lung apices (hyperinflation)."""
    if abs(factor - 1.0) < 1e-6:
        return lungs
    top = grid.y[lungs > 0].min()
    src_y = top + (grid.y - top) / factor  # sample from here
    rows = (src_y / grid.margin + 1) * grid.c / 2 - 0.5
    cols = np.broadcast_to(np.arange(grid.c, dtype=np.float32)[None], rows.shape)
    return ndimage.map_coordinates(lungs, [rows, cols], order=0, mode="constant").astype(np.uint8)


def _trunk(g: Grid, p: AnatomyParams, half: float) -> np.ndarray:
    """Soft-tissue path length of trunk, shoulders and neck (thicker at the midline)."""
    x, y = g.x, g.y
    bw = half * p.body_width
    # half-width of the body outline along y: trunk, shoulders widening above the lungs, neck at the top
    shoulder = smoothstep(-0.45, -0.85, y) * 0.3 * (1 - smoothstep(-1.05, -1.3, y))
    hw = bw + shoulder
    u = np.clip(1 - (x / hw) ** 2, 0, 1)
    trunk = (0.2 * np.sqrt(u) + 0.8 * u) * smoothstep(-1.15, -0.85, y)
    neck = np.sqrt(np.clip(1 - (x / 0.3) ** 2, 0, 1)) * (1 - smoothstep(-1.05, -0.85, y))
    return np.maximum(trunk, 0.8 * neck)


def _heart(g: Grid, lungs: np.ndarray, p: AnatomyParams) -> tuple[np.ndarray, tuple]:
    """Heart silhouette: a wide ellipse resting on the left hemidiaphragm, bulging to the image right.

    Its right border (image left, right atrium) lies a little beyond the spine; the
    rest of the width (``ctr`` x thoracic width) extends to the patient's left.
    """
    x, y = g.x, g.y
    lx = g.x[lungs > 0]
    width = p.ctr * (lx.max() - lx.min())
    bottom = float(np.percentile(g.y[lungs == 2], 95))  # left hemidiaphragm level
    left_edge = -0.1 - 0.25 * (width - 0.62)  # right atrial border
    a = width / 2
    cx = left_edge + a + p.heart_shift - 0.08
    b = 0.2 + 0.12 * width
    cy = bottom - 0.5 * b
    # slightly egg-shaped: wider towards the apex (lower right on the image)
    xx = (x - cx) / a
    yy = (y - cy) / b
    r = xx**2 + (yy - 0.25 * xx) ** 2
    heart = 1 - smoothstep(0.85, 1.1, r)
    box = (cx - a, cx + a, cy - b, cy + b)
    return heart.astype(np.float32), box


def _ribs(g: Grid, lungs: np.ndarray, p: AnatomyParams) -> np.ndarray:
    """Posterior ribs (arching bands that run down laterally) and fainter anterior ribs."""
    ys, xs = g.y[lungs > 0], g.x[lungs > 0]
    top, base = float(ys.min()), float(ys.max())
    half = 0.5 * (xs.max() - xs.min()) + 0.06
    rows, cols = g.window(-half - 0.05, half + 0.05, top - 0.2, base + 0.35)
    x, y = g.x[rows, cols], g.y[rows, cols]
    out = np.zeros_like(g.x)
    acc = np.zeros_like(x)
    cage = (1 - smoothstep(0.9, 1.05, (x / half) ** 2 + ((y - 0.02) / (base - top + 0.3)) ** 2 * 3.2)) * (
        1 - smoothstep(base + 0.05, base + 0.35, y)
    )
    span = base - top + 0.15
    for s in (-1, 1):
        d = np.clip(s * x, 0, None)  # distance from the spine on this side
        # posterior: rises slightly off the spine then curves down laterally
        yp = y - (-0.3 * d + 0.85 * d * d)
        u = np.clip((yp - top + 0.12) / span, 0, None) ** 0.82 * p.rib_count + p.rib_phase
        k = np.floor(u)
        gap = 0.0
        if p.rib_break is not None and p.rib_break[0] == s:
            _, dist, kb = p.rib_break
            broken = (k == kb) & (d > dist)
            u = np.where(broken, u + 0.22, u)  # the lateral fragment steps down
            k = np.floor(u)
            gap = band(d - dist, 0.012, 0.005) * (np.abs(u - kb - 0.3) < 0.4)
        f = u - k
        width = 0.11 + 0.025 * np.sin(1.7 * k + 3 * p.rib_phase)  # ribs differ a little
        rib = band(f - 0.27, width, 0.07)
        cortex = band(np.abs(f - 0.27) - width - 0.02, 0.015, 0.03)
        post = (0.6 * rib + 0.5 * cortex) * (1 - gap)
        # anterior: run down towards the midline, only visible laterally (costal cartilage is not)
        ya = y + 0.45 * d - 0.2 * d * d
        ua = np.clip((ya - top + 0.05) / (span + 0.3), 0, None) * (p.rib_count * 0.75) + 0.4
        fa = ua - np.floor(ua)
        ant = 0.5 * band(fa - 0.3, 0.1, 0.1) * smoothstep(0.2, 0.45, d)
        acc += smoothstep(0.02, 0.09, s * x) * (post + ant)
    out[rows, cols] = acc * cage
    return out


def _clavicles(g: Grid, p: AnatomyParams) -> np.ndarray:
    out = np.zeros_like(g.x)
    rows, cols = g.window(-0.8, 0.8, p.clavicle_y - 0.25, p.clavicle_y + 0.12)
    x, y = g.x[rows, cols], g.y[rows, cols]
    acc = np.zeros_like(x)
    for s in (-1, 1):
        d = s * x
        t = np.clip((d - 0.06) / 0.62, 0, 1)
        yc = p.clavicle_y - 0.14 * t + 0.1 * t * t - 0.05 * np.sin(np.pi * t)
        along = smoothstep(0.04, 0.09, d) * (1 - smoothstep(0.66, 0.72, d))
        half = 0.03 + 0.012 * (1 - t)
        acc += along * (0.6 * band(y - yc, half, 0.02) + 0.3 * band(np.abs(y - yc) - half, 0.006, 0.01))
    out[rows, cols] = acc
    return out


def _spine(g: Grid, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(g.x)
    rows, cols = g.window(-0.09, 0.09, -g.margin, g.margin)
    x, y = g.x[rows, cols], g.y[rows, cols]
    col = band(x, 0.055, 0.015)
    period = 0.1 + 0.008 * float(rng.standard_normal())
    f = (y / period + rng.uniform(0, 1)) % 1.0
    bodies = 0.6 + 0.4 * band(f - 0.5, 0.36, 0.08)  # discs are darker
    pedicles = sum(band(np.hypot((x - s * 0.04) / 0.8, (f - 0.3) * period), 0.012, 0.01) for s in (-1, 1))
    out[rows, cols] = col * bodies * 0.7 + 0.3 * pedicles * col
    return out


def _markings(g: Grid, lungs: np.ndarray, rng: np.random.Generator, p: AnatomyParams) -> np.ndarray:
    """Vessels radiating from the hila: ridges of a random field stretched along the radius, fading outwards."""
    out = np.zeros_like(g.x)
    for s, lab in ((-1, 1), (1, 2)):
        m = lungs == lab
        xs, ys = g.x[m], g.y[m]
        rows, cols = g.window(float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
        x, y = g.x[rows, cols], g.y[rows, cols]
        hx, hy = s * 0.16, -0.08
        r = np.hypot(x - hx, (y - hy) * 0.9)
        ang = np.arctan2(y - hy, s * (x - hx)) / np.pi  # [-1, 1]
        noise = torch.from_numpy(rng.standard_normal((1, 1, 8, 48)).astype(np.float32))
        coords = np.stack([ang, np.sqrt(r) * 1.6 - 1], -1).astype(np.float32)  # grid_sample takes (x, y)
        n = F.grid_sample(noise, torch.from_numpy(coords)[None], mode="bicubic", align_corners=False)[
            0, 0
        ].numpy()
        n = n / (n.std() + 1e-6)
        ridges = np.exp(-((n / 0.25) ** 2)) * (1 - 0.5 * smoothstep(0.1, 0.7, r))
        hilum = 0.9 * np.exp(-((r / 0.12) ** 2))
        out[rows, cols] += m[rows, cols] * (ridges * (0.5 + 0.8 * np.exp(-((r / 0.35) ** 2))) + hilum)
    return (out * p.marks).astype(np.float32)


def build_anatomy(lungs: np.ndarray, grid: Grid, p: AnatomyParams, rng: np.random.Generator) -> Anatomy:
    """Draw the normal chest around ``lungs`` (uint8 ``[c, c]`` label map)."""
    lungs = stretch_lungs(lungs, grid, p.lung_stretch)
    xs = grid.x[lungs > 0]
    half = 0.5 * (xs.max() - xs.min())
    heart, heart_box = _heart(grid, lungs, p)
    soft = _trunk(grid, p, half)
    if p.breast > 0:
        for s in (-1, 1):
            r = np.hypot((grid.x - s * 0.5) / 0.42, (grid.y - 0.45) / 0.3)
            soft += 0.18 * p.breast * (1 - smoothstep(0.7, 1.0, r)) * smoothstep(0.2, 0.5, grid.y)
    inside = (lungs > 0).astype(np.float32)
    lung = gaussian(inside, 0.012 / grid.px)
    depth = gaussian(inside, 0.07 / grid.px)  # thicker lung -> more air
    lung = lung * (0.55 + 0.6 * depth)
    vessels = np.zeros_like(grid.x)
    vessels += 1 - smoothstep(
        0.7, 1.0, np.hypot((grid.x - 0.1) / 0.08, (grid.y + 0.42) / 0.07)
    )  # aortic knob
    med = band(grid.x - 0.01, p.mediastinum, 0.03) * smoothstep(-0.9, -0.6, grid.y)
    air = lung * (1 - 0.8 * heart) * (1 - 0.8 * np.clip(vessels, 0, 1)) * (1 - 0.7 * med)
    trachea = (
        band(grid.x, 0.035, 0.012) * (1 - smoothstep(-0.3, -0.22, grid.y)) * smoothstep(-1.3, -1.1, grid.y)
    )
    air = np.maximum(air, 0.55 * trachea)
    for s in (-1, 1):  # main bronchi from the carina towards the hila
        t = np.clip((s * grid.x) / 0.16, 0, 1)
        yb = -0.26 + 0.12 * t
        air = np.maximum(air, 0.4 * band(grid.y - yb, 0.02, 0.01) * (s * grid.x > 0) * (s * grid.x < 0.16))
    if p.gastric_bubble > 0:
        lx0, lx1 = grid.x[lungs == 2].min(), grid.x[lungs == 2].max()
        base = np.percentile(grid.y[lungs == 2], 99)
        r = np.hypot((grid.x - (0.55 * lx0 + 0.45 * lx1 + 0.12)) / 0.11, (grid.y - base - 0.1) / 0.06)
        air = np.maximum(air, 0.5 * p.gastric_bubble * (1 - smoothstep(0.7, 1.0, r)))
    bone = 0.4 * _ribs(grid, lungs, p) + 0.7 * _clavicles(grid, p) + 0.5 * _spine(grid, rng)
    z = np.zeros_like(grid.x)
    return Anatomy(
        grid=grid,
        lungs=lungs,
        heart=heart,
        heart_box=heart_box,
        thorax=(float(xs.min()), float(xs.max())),
        soft=soft.astype(np.float32),
        air=air.astype(np.float32),
        marks=_markings(grid, lungs, rng, p),
        bone=bone.astype(np.float32),
        opac=z.copy(),
        extra=z.copy(),
    )
