"""The one place for image conventions and conversions.

In memory an image batch is float32 ``[B, 1, H, W]`` with values in ``[0, 1]``
(0 = black, 1 = white, radiograph convention: bone and fluid bright).
Everything else converts through here:

- ``uint8``            ``[B, 1, H, W]`` or ``[B, H, W]`` in ``[0, 255]``
- PNG bytes            8-bit greyscale, one image per blob
- torchxrayvision      ``[B, 1, H, W]`` float in ``[-1024, 1024]`` (``xrv.datasets.normalize``)
- diffusion pixels     ``[B, C, H, W]`` in ``[-1, 1]`` (Stable Diffusion VAE convention)
- raw tensor bytes     (bytes, shape, dtype) as they travel in the reward API

Validation raises ``ValueError`` with a message that says what was wrong and
what to do; nothing is silently clipped or reshaped.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

XRV_RANGE = 1024.0
RAW_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Largest image decoded by default: 4096 x 4096 (16.8 Mpx; a MIMIC-CXR radiograph is ~7 Mpx).
# Pillow itself only warns up to 179 Mpx, so a ~170 kB PNG could otherwise decode to 169 MB.
MAX_IMAGE_PIXELS = 4096 * 4096


def validate(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Check the in-memory convention: float ``[B,1,H,W]`` in [0,1], finite, non-empty."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(
            f"{name}: expected shape [B, 1, H, W], got {list(images.shape)}; "
            "add the channel axis with images[:, None] or convert with cxrl.imaging"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name}: empty batch; send at least one image")
    if images.shape[2] < 8 or images.shape[3] < 8:
        raise ValueError(f"{name}: images are {images.shape[2]}x{images.shape[3]}; need at least 8x8")
    if not images.is_floating_point():
        raise ValueError(
            f"{name}: expected a float tensor in [0, 1], got dtype {images.dtype}; "
            "convert uint8 with cxrl.imaging.from_uint8"
        )
    # one pass: NaN and inf propagate into min/max, so a finite range proves a finite tensor
    lo_t, hi_t = torch.aminmax(images)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")
    return images


def from_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``[B,H,W]`` or ``[B,1,H,W]`` -> float ``[B,1,H,W]`` in [0,1]."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got dtype {t.dtype}")
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"expected uint8 shape [B, H, W] or [B, 1, H, W], got {list(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("empty batch; send at least one image")
    return t.float().div_(255.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float ``[B,1,H,W]`` in [0,1] -> uint8 ``[B,1,H,W]`` (round to nearest)."""
    validate(images)
    return images.mul(255.0).round_().to(torch.uint8)


def encode_png(image: torch.Tensor) -> bytes:
    """One float ``[1,H,W]`` image (or a batch of one) in [0,1] -> 8-bit greyscale PNG bytes."""
    if image.ndim == 3:
        image = image[None]
    if image.shape[0] != 1:
        raise ValueError(f"encode_png takes one image, got a batch of {image.shape[0]}; use encode_pngs")
    array = to_uint8(image)[0, 0].cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def encode_pngs(images: torch.Tensor) -> list[bytes]:
    """float ``[B,1,H,W]`` -> one PNG blob per image."""
    validate(images)
    return [encode_png(img) for img in images]


def png_size(blob: bytes, index: int | None = None) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header, read without decoding anything.

    Raises ``ValueError`` when ``blob`` is not a PNG (the reward API takes PNG only).
    """
    where = "" if index is None else f" (image {index})"
    if len(blob) < 24 or blob[:8] != PNG_SIGNATURE or blob[12:16] != b"IHDR":
        raise ValueError(f"image bytes{where} are not a PNG (no PNG signature and IHDR header); send PNG")
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    if width == 0 or height == 0:
        raise ValueError(f"PNG{where} claims an empty {width}x{height} image")
    return width, height


def check_pixels(width: int, height: int, max_pixels: int, where: str = "") -> None:
    """Refuse an image over ``max_pixels`` before any of it is decoded."""
    if max_pixels and width * height > max_pixels:
        raise ValueError(
            f"image{where} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} per image; downscale it (the reward models read 224-512 px)"
        )


def decode_png(blob: bytes, index: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """PNG bytes -> float ``[1,H,W]`` in [0,1], converted to greyscale.

    The header is checked first: not a PNG, or over ``max_pixels``, is refused before decoding.
    """
    where = "" if index is None else f" (image {index})"
    check_pixels(*png_size(blob, index), max_pixels, where)
    return _decode(blob, where, ("PNG",))


def _decode(blob: bytes, where: str, formats: tuple[str, ...] | None) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(blob), formats=formats) as im:
            im.load()
            grey = im.convert("L") if im.mode not in ("L", "I;16", "I") else im
            array = np.asarray(grey)
    except Exception as exc:  # PIL raises several types for corrupt data
        raise ValueError(f"could not decode image bytes{where}: {exc}; send PNG data") from exc
    if array.dtype == np.uint8:
        return torch.from_numpy(array.copy()).float().div_(255.0)[None]
    # 16-bit greyscale PNGs (common for radiographs)
    return torch.from_numpy(array.astype(np.float32) / 65535.0)[None]


def decode_pngs(
    blobs: Sequence[bytes], max_pixels: int = MAX_IMAGE_PIXELS, max_total_pixels: int = 0
) -> torch.Tensor:
    """A list of PNG blobs of one size -> float ``[B,1,H,W]``.

    Every header is read first: sizes over ``max_pixels`` per image, mixed sizes, or more than
    ``max_total_pixels`` in all (0 = no total limit) are refused before any image is decoded.
    """
    if len(blobs) == 0:
        raise ValueError("empty batch; send at least one image")
    sizes = [png_size(b, i) for i, b in enumerate(blobs)]
    for i, (w, h) in enumerate(sizes):
        check_pixels(w, h, max_pixels, f" (image {i})")
    if len(set(sizes)) != 1:
        raise ValueError(f"images in one batch must share a size, got (width, height) {sorted(set(sizes))}")
    w, h = sizes[0]
    if max_total_pixels and len(blobs) * w * h > max_total_pixels:
        raise ValueError(
            f"{len(blobs)} images of {w}x{h} decode to {len(blobs) * w * h} pixels, over the limit of "
            f"{max_total_pixels} per request; send fewer or smaller images per request"
        )
    images = [_decode(b, f" (image {i})", ("PNG",)) for i, b in enumerate(blobs)]
    return torch.stack(images)


def load_image(path, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Read a local image file (PNG, or JPEG as MIMIC-CXR-JPG ships) -> float ``[1,H,W]`` in [0,1]."""
    with open(path, "rb") as fh:
        blob = fh.read()
    try:
        with Image.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as im:
            check_pixels(*im.size, max_pixels)  # from the header, before decoding
        return _decode(blob, "", ("PNG", "JPEG"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except Exception as exc:  # not an image PIL can identify
        raise ValueError(f"{path}: not a PNG or JPEG image ({exc})") from exc


def save_image(image: torch.Tensor, path) -> None:
    """Write one float ``[1,H,W]`` image in [0,1] as an 8-bit PNG."""
    with open(path, "wb") as fh:
        fh.write(encode_png(image))


def from_raw(data: bytes, shape: Sequence[int], dtype: str = "uint8") -> torch.Tensor:
    """Raw tensor bytes as sent over the API -> float ``[B,1,H,W]`` in [0,1].

    ``shape`` is ``[B,H,W]`` or ``[B,1,H,W]``; ``dtype`` is uint8 (values 0..255) or
    float32/float16 (values already in [0,1]).
    """
    if dtype not in RAW_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(RAW_DTYPES)}")
    shape = [int(s) for s in shape]
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[1] != 1):
        raise ValueError(f"shape must be [B, H, W] or [B, 1, H, W], got {shape}")
    if any(s <= 0 for s in shape):
        raise ValueError(f"shape must be positive in every axis, got {shape}")
    np_dtype = RAW_DTYPES[dtype]
    expected = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
    if len(data) != expected:
        raise ValueError(
            f"tensor data has {len(data)} bytes but shape {shape} with dtype {dtype} needs {expected}"
        )
    array = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    if len(shape) == 3:
        array = array[:, None]
    if np_dtype == np.uint8:
        return from_uint8(torch.from_numpy(array.copy()))
    return validate(torch.from_numpy(array.astype(np.float32)))


def to_raw(images: torch.Tensor, dtype: str = "uint8") -> tuple[bytes, list[int], str]:
    """float ``[B,1,H,W]`` -> (bytes, shape, dtype) for the API."""
    validate(images)
    if dtype == "uint8":
        array = to_uint8(images).cpu().numpy()
    elif dtype in RAW_DTYPES:
        array = images.cpu().numpy().astype(RAW_DTYPES[dtype])
    else:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(RAW_DTYPES)}")
    return array.tobytes(), list(array.shape), dtype


def resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``[B,C,H,W]`` to ``size`` (square int or (H, W)); bilinear with antialiasing.

    Returns the input unchanged when it already has that size.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    out = F.interpolate(images, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0) if images.shape[1] == 1 else out


def to_xrv(images: torch.Tensor, size: int | None = 224) -> torch.Tensor:
    """float ``[B,1,H,W]`` in [0,1] -> torchxrayvision input ``[B,1,size,size]`` in [-1024,1024]."""
    validate(images)
    if size is not None:
        images = resize(images, size)
    return (images * 2.0 - 1.0) * XRV_RANGE


def from_xrv(images: torch.Tensor) -> torch.Tensor:
    """torchxrayvision range [-1024,1024] -> [0,1]."""
    return ((images / XRV_RANGE) + 1.0).mul_(0.5).clamp_(0.0, 1.0)


def to_diffusion(images: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """[0,1] greyscale -> diffusion pixel space [-1,1] with ``channels`` channels (3 for SD VAEs)."""
    validate(images)
    x = images * 2.0 - 1.0
    return x.expand(-1, channels, -1, -1).contiguous() if channels != 1 else x


def from_diffusion(pixels: torch.Tensor) -> torch.Tensor:
    """Diffusion decoder output [-1,1], 1 or 3 channels -> greyscale [0,1] ``[B,1,H,W]``.

    Multi-channel outputs are averaged (RoentGen decodes greyscale radiographs to RGB).
    """
    if pixels.ndim != 4:
        raise ValueError(f"expected [B, C, H, W] decoder output, got {list(pixels.shape)}")
    grey = pixels.float().mean(dim=1, keepdim=True) if pixels.shape[1] != 1 else pixels.float()
    return ((grey + 1.0) * 0.5).clamp_(0.0, 1.0)
