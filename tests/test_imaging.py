"""cxrl.imaging: round trips between every representation, and every rejection."""

import numpy as np
import pytest
import torch

from cxrl import imaging


def batch(b=3, h=32, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    # multiples of 1/255 so the uint8 round trip is exact
    return torch.randint(0, 256, (b, 1, h, w), generator=g).float() / 255.0


def test_uint8_round_trip_is_exact():
    x = batch()
    u = imaging.to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == x.shape
    assert torch.equal(imaging.from_uint8(u), x)


def test_uint8_rounds_to_nearest():
    assert int(imaging.to_uint8(torch.full((1, 1, 8, 8), 0.6 / 255)).max()) == 1
    assert int(imaging.to_uint8(torch.full((1, 1, 8, 8), 0.4 / 255)).max()) == 0


def test_from_uint8_accepts_bhw():
    u = torch.randint(0, 256, (2, 16, 16), dtype=torch.uint8)
    assert imaging.from_uint8(u).shape == (2, 1, 16, 16)


def test_png_round_trip_is_exact():
    x = batch(b=2)
    blobs = imaging.encode_pngs(x)
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in blobs)
    assert torch.equal(imaging.decode_pngs(blobs), x)


def test_decode_png_converts_rgb_to_grey():
    from io import BytesIO

    from PIL import Image

    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., :] = 200
    buf = BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    out = imaging.decode_png(buf.getvalue())
    assert out.shape == (1, 10, 12)
    assert torch.allclose(out, torch.full_like(out, 200 / 255))


def test_decode_png_16_bit():
    from io import BytesIO

    from PIL import Image

    arr = np.full((9, 9), 65535, np.uint16)
    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = imaging.decode_png(buf.getvalue())
    assert torch.allclose(out, torch.ones(1, 9, 9))


def test_raw_round_trip_uint8_and_float():
    x = batch()
    data, shape, dtype = imaging.to_raw(x)
    assert dtype == "uint8" and shape == [3, 1, 32, 24] and len(data) == 3 * 32 * 24
    assert torch.equal(imaging.from_raw(data, shape, dtype), x)
    data, shape, dtype = imaging.to_raw(x, "float32")
    assert torch.equal(imaging.from_raw(data, shape, dtype), x)
    # [B,H,W] shapes are accepted too
    assert imaging.from_raw(bytes(2 * 8 * 8), [2, 8, 8]).shape == (2, 1, 8, 8)


def test_xrv_range_and_round_trip():
    x = batch(h=64, w=64)
    v = imaging.to_xrv(x, size=None)
    assert float(v.min()) >= -1024 and float(v.max()) <= 1024
    assert torch.allclose(imaging.from_xrv(v), x, atol=1e-6)
    assert imaging.to_xrv(torch.zeros(1, 1, 64, 64)).eq(-1024).all()
    assert imaging.to_xrv(torch.ones(1, 1, 64, 64)).eq(1024).all()


def test_xrv_matches_torchxrayvision_normalize():
    import torchxrayvision as xrv

    x = batch(h=16, w=16)
    ours = imaging.to_xrv(x, size=None)
    theirs = xrv.datasets.normalize(imaging.to_uint8(x).numpy().astype(np.float32), 255)
    assert np.allclose(ours.numpy(), theirs, atol=1e-3)


def test_resize_to_model_size():
    x = batch(h=64, w=48)
    y = imaging.resize(x, 32)
    assert y.shape == (3, 1, 32, 32)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert imaging.resize(x, (64, 48)) is x
    flat = torch.full((1, 1, 64, 64), 0.3)
    assert torch.allclose(imaging.resize(flat, 16), torch.full((1, 1, 16, 16), 0.3), atol=1e-6)


def test_diffusion_round_trip():
    x = batch(h=16, w=16)
    d = imaging.to_diffusion(x, channels=3)
    assert d.shape == (3, 3, 16, 16) and float(d.min()) >= -1 and float(d.max()) <= 1
    assert torch.allclose(imaging.from_diffusion(d), x, atol=1e-6)
    assert torch.allclose(imaging.from_diffusion(imaging.to_diffusion(x)), x, atol=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 16, 16), "shape"),
        (torch.rand(1, 3, 16, 16), "shape"),
        (torch.rand(1, 1, 1, 16, 16), "shape"),
        (torch.empty(0, 1, 16, 16), "empty"),
        (torch.randint(0, 255, (1, 1, 16, 16), dtype=torch.uint8), "float"),
        (torch.full((1, 1, 16, 16), float("nan")), "NaN"),
        (torch.cat([torch.rand(1, 1, 16, 16), torch.full((1, 1, 16, 16), float("inf"))]), "infinite"),
        (torch.rand(1, 1, 16, 16).index_fill_(2, torch.tensor([5]), float("nan")), "NaN"),
        (torch.full((1, 1, 16, 16), 1.5), r"\[0, 1\]"),
        (torch.full((1, 1, 16, 16), -0.1), r"\[0, 1\]"),
        (torch.rand(1, 1, 4, 4), "at least"),
        (np.zeros((1, 1, 16, 16)), "torch.Tensor"),
    ],
)
def test_validate_rejects(bad, message):
    with pytest.raises(ValueError, match=message):
        imaging.validate(bad)


@pytest.mark.parametrize(
    "data, shape, dtype, message",
    [
        (bytes(10), [1, 8, 8], "uint8", "needs 64"),
        (bytes(64), [1, 8, 8], "int64", "unsupported dtype"),
        (bytes(64), [1, 2, 8, 4], "uint8", "shape"),
        (bytes(64), [64], "uint8", "shape"),
        (bytes(0), [0, 8, 8], "uint8", "positive"),
        (np.full(64, np.nan, np.float32).tobytes(), [1, 8, 8], "float32", "NaN"),
        (np.full(64, 2.0, np.float32).tobytes(), [1, 8, 8], "float32", r"\[0, 1\]"),
    ],
)
def test_from_raw_rejects(data, shape, dtype, message):
    with pytest.raises(ValueError, match=message):
        imaging.from_raw(data, shape, dtype)


def test_decode_rejects_garbage_and_names_the_image():
    with pytest.raises(ValueError, match=r"image 1"):
        imaging.decode_pngs([imaging.encode_png(torch.zeros(1, 8, 8)), b"not a png"])
    with pytest.raises(ValueError, match="empty"):
        imaging.decode_pngs([])
    with pytest.raises(ValueError, match="share a size"):
        imaging.decode_pngs(
            [imaging.encode_png(torch.zeros(1, 8, 8)), imaging.encode_png(torch.zeros(1, 9, 9))]
        )


def test_from_uint8_rejects_wrong_dtype_and_shape():
    with pytest.raises(ValueError, match="uint8"):
        imaging.from_uint8(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        imaging.from_uint8(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        imaging.from_uint8(torch.zeros(0, 8, 8, dtype=torch.uint8))


def test_image_file_round_trip(tmp_path):
    x = batch(b=1)[0]
    imaging.save_image(x, tmp_path / "a.png")
    assert torch.equal(imaging.load_image(tmp_path / "a.png"), x)
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.png"):
        imaging.load_image(tmp_path / "bad.png")


# --- decompression bombs: refused from the header, before any pixel is decoded ----------------------


def _peak_rss(reset: bool = False) -> int:
    """This process's peak resident memory (VmHWM); ``reset`` starts a new peak from the current RSS."""
    from pathlib import Path

    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("side", [9500, 10000, 13000])  # 90, 100 and 169 Mpx: Pillow only warns here
def test_png_bomb_in_pillows_warning_band_is_refused_before_decoding(side):
    from _payloads import png_bomb

    blob = png_bomb(side, side)
    assert len(blob) < 200_000 and imaging.png_size(blob) == (side, side)
    rss0 = _peak_rss(reset=True)
    with pytest.raises(ValueError, match=rf"{side}x{side} = {side * side} pixels, over the limit"):
        imaging.decode_png(blob)
    with pytest.raises(ValueError, match=r"\(image 1\) is .* over the limit"):
        imaging.decode_pngs([imaging.encode_png(torch.zeros(1, 8, 8)), blob])
    assert _peak_rss() - rss0 < 16 << 20  # decoding would take side*side bytes (90-169 MB)


def test_many_valid_large_pngs_are_refused_by_the_total_before_decoding():
    from _payloads import png_bomb

    blobs = [png_bomb(2048, 2048)] * 64  # each within the per-image cap; 268 Mpx = 1 GiB as float32
    rss0 = _peak_rss(reset=True)
    with pytest.raises(ValueError, match=r"64 images of 2048x2048 decode to 268435456 pixels, over"):
        imaging.decode_pngs(blobs, max_total_pixels=64 << 20)
    assert _peak_rss() - rss0 < 16 << 20
    out = imaging.decode_pngs(blobs[:2], max_total_pixels=64 << 20)  # the same images, fewer: decoded
    assert out.shape == (2, 1, 2048, 2048) and float(out.max()) == 0.0


def test_only_png_is_decoded_from_bytes(tmp_path):
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="JPEG")
    with pytest.raises(ValueError, match="not a PNG"):
        imaging.decode_png(buf.getvalue())
    (tmp_path / "a.jpg").write_bytes(buf.getvalue())  # local files (MIMIC-CXR-JPG) may be JPEG
    assert imaging.load_image(tmp_path / "a.jpg").shape == (1, 16, 16)


def test_local_image_files_have_the_pixel_cap_too(tmp_path):
    from _payloads import png_bomb

    (tmp_path / "bomb.png").write_bytes(png_bomb(13000, 13000))
    with pytest.raises(ValueError, match="bomb.png: image is 13000x13000"):
        imaging.load_image(tmp_path / "bomb.png")
