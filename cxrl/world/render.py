"""Render one synthetic frontal chest radiograph: anatomy + findings -> attenuation -> posture -> detector.

Pipeline for one image (``Renderer.render``):

1. anatomy parameters are drawn, then changed by the findings that alter anatomy
   (cardiomegaly, emphysema, fracture; ``findings.ADJUSTERS``);
2. the normal chest is drawn around a real lung mask on a canvas that spans
   [-margin, margin]^2 of the canonical frame (``anatomy.build_anatomy``);
3. findings and devices are drawn where the report puts them;
4. the layers become attenuation ``A`` and brightness ``I = 1 - exp(-k A)``;
5. the canonical image is POSED with the inverse of the recorded psi
   (``posture.pose_matrix``): ``posed(q) = canon(M(psi)^-1 q)``. Because the canvas is
   larger than the picture, rotated and shrunk images show the body beyond the
   canonical window instead of empty corners;
6. detector: slight blur, exposure/contrast variation, heel-effect gradient and
   signal-dependent noise.

``align(posed, psi)`` (``posture.align``) gives back the unposed render (``RenderOutput.canonical``,
before the detector step) wherever the aligned pixel's source lies in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cxrl.world.anatomy import AnatomyParams, Grid, blur, build_anatomy
from cxrl.world.devices import support_devices
from cxrl.world.findings import ADJUSTERS, BILATERAL, RENDERERS
from cxrl.world.masks import MaskSet, load_mask_set
from cxrl.world.posture import IDENTITY, pose_matrix

MARGIN = 1.5  # canvas half-extent in canonical units (covers every pose in PostureRanges)
SUPPORT_DEVICES = "Support Devices"


@dataclass(frozen=True)
class Draw:
    """One finding to draw: label, side (-1 patient right / image left, +1 left, 0 both), strength (1 or 0.5)."""

    label: str
    side: int
    strength: float


@dataclass
class RenderOutput:
    image: np.ndarray  # [S, S] float32 in [0, 1]: the posed radiograph with detector effects
    canonical: np.ndarray  # [S, S] float32 in [0, 1]: the unposed render before the detector step
    devices: list[str] = field(default_factory=list)  # kinds of support devices drawn


@dataclass(frozen=True)
class DetectorParams:
    """Acquisition: exposure and noise of one image."""

    k: float  # attenuation -> brightness gain
    gamma: float  # display gamma
    noise: float  # noise standard deviation at mid grey
    heel: float  # top-to-bottom exposure gradient
    blur: float  # detector blur in pixels (Gaussian sigma)

    @staticmethod
    def sample(rng: np.random.Generator) -> DetectorParams:
        return DetectorParams(
            k=float(rng.uniform(0.95, 1.15)),
            gamma=float(rng.uniform(0.85, 1.15)),
            noise=float(rng.uniform(0.01, 0.025)),
            heel=float(rng.uniform(-0.04, 0.04)),
            blur=float(rng.uniform(0.4, 0.9)),
        )


class Renderer:
    """Renders world images of ``size`` px from the mask set (loaded once per process)."""

    def __init__(self, size: int, masks: MaskSet | None = None):
        if size < 32:
            raise ValueError(f"image size {size} is too small; use at least 32 px")
        self.size = size
        canvas = int(round(size * MARGIN))
        self.masks = masks if masks is not None else load_mask_set(canvas, MARGIN)
        self.grid = Grid(self.masks.canvas, self.masks.margin)

    @property
    def n_masks(self) -> int:
        return len(self.masks.labels)

    def attenuation(
        self, mask_index: int, draws: list[Draw], rng: np.random.Generator
    ) -> tuple[np.ndarray, list]:
        """Canvas attenuation ``[c, c]`` for one patient and the device kinds drawn."""
        # separate streams: the same rng state gives the same patient whatever the findings
        rng_anatomy, rng = rng.spawn(2)
        params = AnatomyParams.sample(rng_anatomy)
        for d in draws:
            if d.label in ADJUSTERS:
                ADJUSTERS[d.label](params, d.side, d.strength, rng)
        a = build_anatomy(self.masks.labels[mask_index], self.grid, params, rng_anatomy)
        devices: list[str] = []
        for d in draws:
            if d.label == SUPPORT_DEVICES:
                devices = support_devices(a, d.strength, rng)
            elif d.label in RENDERERS:
                RENDERERS[d.label](a, d.side, d.strength, rng)
            else:
                raise ValueError(f"no renderer for label {d.label!r}")
        opac = np.clip(a.opac, 0, 1)
        air = np.clip(a.air, 0, 1.6) * (1 - opac)
        lung = a.lungs > 0
        atten = (
            1.75 * a.soft * (1 - 0.74 * np.clip(air, 0, 1.2))
            + 0.3 * a.marks * (1 - opac) * lung
            + 0.15 * opac * lung
            + 0.8 * a.bone
            + a.extra
        )
        return np.clip(atten, 0, None).astype(np.float32), devices

    def render(
        self,
        mask_index: int,
        draws: list[Draw],
        psi: tuple[float, ...] = IDENTITY,
        rng: np.random.Generator | None = None,
        detector: bool = True,
    ) -> RenderOutput:
        """One radiograph. ``rng`` drives every random choice (same rng state -> same pixels)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        rng_detector, rng = rng.spawn(2)
        det = DetectorParams.sample(rng_detector)
        atten, devices = self.attenuation(mask_index, draws, rng)
        bright = 1.0 - np.exp(-det.k * atten)  # [c, c]
        canvas = torch.from_numpy(bright)[None, None]  # [1, 1, c, c]
        s = self.size
        ident = torch.eye(2, 3)[None] / MARGIN
        canonical = _sample(canvas, ident, s)
        posed = _sample(canvas, pose_matrix(torch.tensor([psi], dtype=torch.float64)).float() / MARGIN, s)
        image = self._detector(posed, det, rng_detector) if detector else posed
        return RenderOutput(image[0, 0].numpy(), canonical[0, 0].clamp(0, 1).numpy(), devices)

    def _detector(self, x: torch.Tensor, det: DetectorParams, rng: np.random.Generator) -> torch.Tensor:
        s = self.size
        x = blur(x, det.blur * s / 256)
        ramp = torch.linspace(-1, 1, s).view(1, 1, s, 1)
        x = x.clamp(0, 1).pow(det.gamma) * (1 + det.heel * ramp)
        noise = torch.from_numpy(rng.standard_normal((1, 1, s, s)).astype(np.float32))
        x = x + det.noise * (0.5 + x) * noise
        return x.clamp(0, 1)


def _sample(canvas: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    grid = F.affine_grid(matrix, [1, 1, size, size], align_corners=False)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="border", align_corners=False)


def side_of(laterality: str, label: str, rng: np.random.Generator) -> int:
    """Report laterality -> side to draw (patient's right = image left = -1)."""
    if laterality == "left":
        return 1
    if laterality == "right":
        return -1
    if laterality == "bilateral" or label in ("Edema", "Emphysema"):
        return BILATERAL
    return int(rng.choice((-1, 1, BILATERAL), p=(0.4, 0.4, 0.2)))
