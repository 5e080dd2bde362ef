"""Real lung masks (torchxrayvision's ``semantic_masks_v7labs_lungs.zip``) placed in the canonical frame.

The zip holds 517 binary lung segmentations of real chest radiographs (V7 Labs).
Unusable ones are filtered out (``MaskFilter``): empty masks, masks with one lung
only (fewer than two connected components each holding at least ``min_lung_share``
of the lung area), masks touching the image border (the lungs were cropped), tiny
masks, and implausible shapes (union aspect ratio or lung heights out of range).

Each kept mask is normalised into the canonical frame of the world: the bounding box
of both lungs is stretched onto ``LUNG_BOX`` (normalised [-1, 1] coordinates, x to
the image right, y downwards), so the mask set carries real lung *shapes* while
posture (scale, shift, rotation) comes only from the recorded psi. Components are
labelled 1 = right lung (patient's right, image left) and 2 = left lung.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cxrl.world.corpus import MASKS_FILE, xrv_data_file

log = logging.getLogger(__name__)

# Where both lungs sit in the canonical (unposed) frame: x0, x1, y0, y1 in [-1, 1] coordinates.
LUNG_BOX: tuple[float, float, float, float] = (-0.74, 0.74, -0.68, 0.52)
MEDIASTINUM_HALF = 0.05  # half the gap between the lungs' medial bounding-box edges
CACHE_VERSION = 1  # bump when the filter or the crop format changes
WORK_SIZE = 384  # masks are analysed at this longest side (px)


@dataclass(frozen=True)
class MaskFilter:
    """Thresholds that decide whether a real lung mask is usable."""

    min_area_share: float = 0.05  # lungs must cover at least this share of the source image
    min_lung_share: float = 0.2  # each of the two lungs holds at least this share of the lung area
    border_px: int = 2  # masks within this many pixels (at WORK_SIZE) of the border are cropped
    aspect_range: tuple[float, float] = (0.8, 2.2)  # width / height of the two-lung bounding box
    min_height_ratio: float = 0.55  # each lung's height relative to the two-lung box height


@dataclass(frozen=True)
class MaskSet:
    """Usable masks in the canonical frame: ``labels`` uint8 ``[N, C, C]`` (0 bg, 1 right, 2 left lung)."""

    labels: np.ndarray  # [N, C, C] uint8
    names: tuple[str, ...]  # source file name of each mask in the zip
    canvas: int  # C: pixels across the canvas
    margin: float  # the canvas spans [-margin, margin] in normalised coordinates
    rejected: dict[str, int]  # reason -> count


def _read_mask(data: bytes, name: str) -> np.ndarray:
    """Decode a mask file to bool ``[H, W]`` at most WORK_SIZE on its longest side."""
    try:
        im = Image.open(io.BytesIO(data))
        im.draft("L", (max(1, im.width // 4), max(1, im.height // 4)))  # fast JPEG downscale
        im = im.convert("L")
    except Exception as exc:  # PIL raises several types for corrupt data
        raise ValueError(f"{name}: cannot decode lung mask ({exc})") from exc
    scale = max(im.size) / WORK_SIZE
    if scale > 1:
        im = im.resize((max(1, round(im.width / scale)), max(1, round(im.height / scale))), Image.BILINEAR)
    return np.asarray(im) >= 128


def check_mask(mask: np.ndarray, flt: MaskFilter = MaskFilter()) -> tuple[np.ndarray | None, str]:
    """bool ``[H, W]`` -> (uint8 label map cropped to the lungs' box with 1 = image-left lung, 2 = image-right lung, "ok")
    or (None, reason) when the mask is unusable."""
    area = int(mask.sum())
    if area == 0:
        return None, "empty"
    if area < flt.min_area_share * mask.size:
        return None, "tiny"
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    b = flt.border_px
    if ys.min() < b or xs.min() < b or ys.max() >= h - b or xs.max() >= w - b:
        return None, "touches border"
    comp, n = ndimage.label(mask)
    sizes = np.bincount(comp.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    if n < 2 or sizes[order[1]] < flt.min_lung_share * area:
        return None, "one lung"
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    aspect = (x1 - x0) / (y1 - y0)
    if not flt.aspect_range[0] <= aspect <= flt.aspect_range[1]:
        return None, "aspect"
    lungs = []
    for k in order[:2]:
        lys, lxs = np.nonzero(comp == k + 1)
        if (lys.max() - lys.min() + 1) < flt.min_height_ratio * (y1 - y0):
            return None, "short lung"
        lungs.append((lxs.mean(), k + 1))
    lungs.sort()  # image-left component first
    cx_mid = 0.5 * (x0 + x1)
    if not (lungs[0][0] < cx_mid < lungs[1][0]):
        return None, "lungs not side by side"
    out = np.zeros((y1 - y0, x1 - x0), np.uint8)
    crop = comp[y0:y1, x0:x1]
    out[crop == lungs[0][1]] = 1
    out[crop == lungs[1][1]] = 2
    return out, "ok"


def place(label_crop: np.ndarray, canvas: int, margin: float) -> np.ndarray:
    """Stretch a cropped label map onto LUNG_BOX of a ``canvas``-pixel frame spanning [-margin, margin]."""

    def to_px(v: float) -> int:
        return int(round((v + margin) / (2 * margin) * canvas))

    bx0, bx1, by0, by1 = LUNG_BOX
    py0, py1 = to_px(by0), to_px(by1)
    hc = label_crop.shape[0]
    out = np.zeros((canvas, canvas), np.uint8)
    # each lung is stretched onto its own half of the box, leaving a mediastinal gap of
    # 2 * MEDIASTINUM_HALF; its vertical extent keeps its place within the two-lung box
    sides = ((1, bx0, -MEDIASTINUM_HALF), (2, MEDIASTINUM_HALF, bx1))
    for lab, sx0, sx1 in sides:
        ys, xs = np.nonzero(label_crop == lab)
        ly0, ly1, lx0, lx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        qy0 = py0 + int(round(ly0 / hc * (py1 - py0)))
        qy1 = py0 + int(round(ly1 / hc * (py1 - py0)))
        qx0, qx1 = to_px(sx0), to_px(sx1)
        lung = (label_crop[ly0:ly1, lx0:lx1] == lab).astype(np.uint8) * 255
        resized = np.asarray(Image.fromarray(lung).resize((qx1 - qx0, qy1 - qy0), Image.BILINEAR)) >= 128
        resized = ndimage.binary_fill_holes(ndimage.binary_closing(resized, iterations=2))
        region = out[qy0:qy1, qx0:qx1]
        region[resized] = lab
    # smooth the jagged nearest-neighbour outline a little, keeping labels
    for lab in (1, 2):
        soft = ndimage.uniform_filter((out == lab).astype(np.float32), size=3)
        out[(soft > 0.5) & (out == 0)] = lab
        out[(soft <= 0.5) & (out == lab)] = 0
    return out


def _crops(zpath: Path) -> tuple[list[np.ndarray], list[str], dict[str, int]]:
    """Filtered, cropped label maps of every usable mask in the zip (size-independent)."""
    crops, names = [], []
    rejected: dict[str, int] = {}
    try:
        archive = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{zpath}: cannot open the lung mask zip ({exc})") from exc
    with archive:
        for name in sorted(archive.namelist()):
            if name.endswith("/"):
                continue
            crop, reason = check_mask(_read_mask(archive.read(name), name))
            if crop is None:
                rejected[reason] = rejected.get(reason, 0) + 1
                continue
            crops.append(crop)
            names.append(name.rsplit("/", 1)[-1])
    return crops, names, rejected


def _cache_file(zpath: Path) -> Path:
    stat = zpath.stat()
    root = Path(os.environ.get("CXRL_CACHE", Path.home() / ".cache" / "cxrl"))
    return root / f"lung_masks_v{CACHE_VERSION}_{stat.st_size}_{int(stat.st_mtime)}.npz"


def load_crops(zpath: Path) -> tuple[list[np.ndarray], list[str], dict[str, int]]:
    """``_crops`` through an on-disk cache (``$CXRL_CACHE``, default ~/.cache/cxrl; written atomically)."""
    cache = _cache_file(zpath)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                n = int(z["n"])
                crops = [z[f"crop{i}"] for i in range(n)]
                names = [str(v) for v in z["names"]]
                rejected = json.loads(str(z["rejected"]))
            return crops, names, rejected
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring unreadable mask cache %s (%s)", cache, exc)
    crops, names, rejected = _crops(zpath)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        arrays = {f"crop{i}": c for i, c in enumerate(crops)}
        np.savez_compressed(tmp, n=len(crops), names=np.array(names), rejected=json.dumps(rejected), **arrays)
        os.replace(tmp, cache)
    except OSError as exc:  # a read-only home is fine: just slower next time
        log.warning("could not write mask cache %s (%s)", cache, exc)
    return crops, names, rejected


@lru_cache(maxsize=4)
def load_mask_set(canvas: int, margin: float, path: str | None = None) -> MaskSet:
    """Read, filter and place every mask of the zip (cached per canvas size)."""
    zpath = Path(path) if path is not None else xrv_data_file(MASKS_FILE)
    crops, names, rejected = load_crops(zpath)
    if not crops:
        raise ValueError(f"{zpath}: no usable lung masks (rejected: {rejected})")
    placed = _cache_file(zpath).with_name(_cache_file(zpath).stem + f"_c{canvas}_m{margin:g}.npy")
    labels = None
    if placed.is_file():
        try:
            labels = np.load(placed, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable mask cache %s (%s)", placed, exc)
    if labels is None or labels.shape != (len(crops), canvas, canvas):
        labels = np.stack([place(c, canvas, margin) for c in crops])
        try:
            tmp = placed.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, labels)
            os.replace(tmp, placed)
        except OSError as exc:
            log.warning("could not write mask cache %s (%s)", placed, exc)
    log.info("lung masks: %d usable, rejected %s", len(labels), rejected)
    return MaskSet(labels, tuple(names), canvas, margin, rejected)
