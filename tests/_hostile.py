"""Seeded generator of malformed reward-API requests (for tests/test_reliability_services.py).

Each case is one request that a correct server must reject as the client's fault:
INVALID_ARGUMENT over gRPC, 422 over HTTP. ``grpc_cases`` yields proto messages (ScoreRequest to
the gateway, PredictRequest to a model application) and raw byte strings that are not a valid
message at all; ``http_cases`` yields JSON bodies (the proto cases in their JSON mapping) plus
bodies that are not valid JSON, the wrong JSON types, or missing fields.
"""

from __future__ import annotations

import io
import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from PIL import Image

from cxrl import imaging
from cxrl.reward.v1 import reward_pb2 as pb

MODELS = ("posture", "diagnostic", "consistency")
INT32_MAX = 2**31 - 1


@dataclass
class GrpcCase:
    kind: str  # category of the fault
    application: str  # "reward" (RewardService.Score) or a model (ModelService.Predict)
    message: pb.ScoreRequest | pb.PredictRequest | None  # None: send ``raw`` as the request bytes
    raw: bytes = b""


@dataclass
class HttpCase:
    kind: str
    path: str  # /v1/score or /<model>/v1/predict
    body: bytes  # sent as is with content type application/json
    content_type: str = "application/json"


def _uint8(rng: random.Random, b: int, h: int, w: int) -> bytes:
    return np.random.default_rng(rng.getrandbits(32)).integers(0, 256, b * h * w, dtype=np.uint8).tobytes()


def _png(rng: random.Random, h: int, w: int) -> bytes:
    array = np.frombuffer(_uint8(rng, 1, h, w), dtype=np.uint8).reshape(h, w)
    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _tensor(data: bytes, shape: list[int], dtype: int = pb.DTYPE_UINT8) -> pb.ImageBatch:
    return pb.ImageBatch(tensor=pb.Tensor(data=data, shape=shape, dtype=dtype))


def _valid_batch(rng: random.Random) -> tuple[pb.ImageBatch, int]:
    b, h, w = rng.randint(1, 3), rng.randint(8, 32), rng.randint(8, 32)
    shape = [b, h, w] if rng.random() < 0.5 else [b, 1, h, w]
    return _tensor(_uint8(rng, b, h, w), shape), b


# --- image faults: each returns (bad ImageBatch, the batch size a matching request would have) ------


def _wrong_rank(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    shape = rng.choice([[], [b * h * w], [b, h * w], [b, 1, 1, h, w], [1, b, 1, 1, h, w]])
    return _tensor(_uint8(rng, b, h, w), shape), b


def _wrong_channels(rng):
    b, c, h, w = rng.randint(1, 3), rng.randint(2, 4), rng.randint(8, 24), rng.randint(8, 24)
    return _tensor(_uint8(rng, b * c, h, w), [b, c, h, w]), b


def _negative_dim(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    shape = [b, h, w]
    shape[rng.randrange(3)] *= -1
    return _tensor(_uint8(rng, b, h, w), shape), b


def _zero_dim(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    shape = [b, 1, h, w]
    shape[rng.choice([0, 2, 3])] = 0
    return _tensor(b"", shape), b


def _huge_dim(rng):
    b = rng.randint(1, 3)
    shape = [b, rng.choice([INT32_MAX, 1 << 20, 65536]), rng.choice([INT32_MAX, 1 << 16, 4096])]
    if rng.random() < 0.3:
        shape = [INT32_MAX, 1, INT32_MAX, INT32_MAX]
    return _tensor(_uint8(rng, 1, 16, 16), shape), b


def _too_small(rng):
    b, h, w = rng.randint(1, 3), rng.randint(1, 7), rng.randint(1, 40)
    if rng.random() < 0.5:
        h, w = w, h
    return _tensor(_uint8(rng, b, h, w), [b, 1, h, w]), b


def _byte_count(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    data = _uint8(rng, b, h, w)
    cut = rng.randint(1, len(data)) if rng.random() < 0.6 else -rng.randint(1, 64)
    data = data[:-cut] if cut > 0 else data + bytes(-cut)
    return _tensor(data, [b, 1, h, w]), b


def _unknown_dtype(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    return _tensor(_uint8(rng, b, h, w), [b, h, w], dtype=rng.randint(3, 1000)), b


def _dtype_mismatch(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    return _tensor(_uint8(rng, b, h, w), [b, h, w], dtype=rng.choice([pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT16])), b


def _bad_floats(rng):
    b, h, w = rng.randint(1, 3), rng.randint(8, 24), rng.randint(8, 24)
    np_dtype, enum = rng.choice([(np.float32, pb.DTYPE_FLOAT32), (np.float16, pb.DTYPE_FLOAT16)])
    values = np.random.default_rng(rng.getrandbits(32)).random(b * h * w).astype(np_dtype)
    bad = rng.choice([np.nan, np.inf, -np.inf, 1.5, -0.25, 1e4])
    idx = np.random.default_rng(rng.getrandbits(32)).choice(values.size, rng.randint(1, 5))
    values[idx] = bad
    return _tensor(values.tobytes(), [b, 1, h, w], dtype=enum), b


def _bad_png(rng):
    """Encoded images that cannot be scored, drawn again until the batch really fails to decode or
    validate (a PNG cut after its image data, say, still decodes)."""
    while True:
        batch = _bad_png_candidate(rng)
        try:
            imaging.validate(imaging.decode_pngs(list(batch.encoded.images)))
        except ValueError:
            return batch, len(batch.encoded.images)


def _bad_png_candidate(rng) -> pb.ImageBatch:
    n = rng.randint(1, 3)
    good = [_png(rng, 16, 16) for _ in range(n)]
    fault = rng.randrange(7)
    if fault == 0:  # random garbage
        good[rng.randrange(n)] = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    elif fault == 1:  # truncated PNG
        i = rng.randrange(n)
        good[i] = good[i][: rng.randint(8, len(good[i]) - 1)]
    elif fault == 2:  # PNG signature, garbage after
        good[rng.randrange(n)] = b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(64))
    elif fault == 3:  # corrupted bytes inside the image data
        i = rng.randrange(n)
        good[i] = _corrupt(rng, good[i])
    elif fault == 4:  # images of different sizes in one batch
        good.append(_png(rng, 16, rng.randint(17, 24)))
    elif fault == 5:  # too small to score
        good = [_png(rng, rng.randint(1, 7), rng.randint(1, 7)) for _ in range(n)]
    else:  # a PNG header claiming a huge image with no pixel data
        good[rng.randrange(n)] = _huge_png_header(rng)
    return pb.ImageBatch(encoded=pb.EncodedImages(images=good))


def _corrupt(rng, png: bytes) -> bytes:
    """Flip bytes after the header until the PNG no longer decodes (some flips land where
    the decoder does not look, e.g. the unchecked CRC of the image data)."""
    while True:
        blob = bytearray(png)
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(33, len(blob))] ^= 1 + rng.randrange(255)
        try:
            imaging.decode_png(bytes(blob))
        except ValueError:
            return bytes(blob)


def _huge_png_header(rng) -> bytes:
    import zlib

    w, h = rng.choice([(100000, 100000), (65535, 65535), (1 << 30, 8)])
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _no_images(rng):
    return rng.choice(
        [
            pb.ImageBatch(),
            pb.ImageBatch(encoded=pb.EncodedImages()),
            _tensor(b"", []),
            _tensor(b"", [0, 8, 8]),
        ]
    ), 0


IMAGE_FAULTS: dict[str, Callable] = {
    "wrong rank": _wrong_rank,
    "wrong channels": _wrong_channels,
    "negative dim": _negative_dim,
    "zero dim": _zero_dim,
    "huge dim": _huge_dim,
    "below 8x8": _too_small,
    "byte count": _byte_count,
    "unknown dtype": _unknown_dtype,
    "dtype mismatch": _dtype_mismatch,
    "nan/inf/out of range": _bad_floats,
    "undecodable png": _bad_png,
    "no images": _no_images,
}


def _reports(rng, n: int) -> list[str]:
    pool = ["No acute process.", "Right pleural effusion.", "Cardiomegaly.", "", "ünïcödé ✓ report"]
    return [rng.choice(pool) for _ in range(n)]


def _score_request(rng) -> pb.ScoreRequest:
    """One malformed ScoreRequest; its kind is stored in request_id."""
    kind = rng.choice(
        [
            *IMAGE_FAULTS,
            "anchor fault",
            "report count",
            "anchor count",
            "weights name",
            "weights value",
            "too many images",
            "oversize",
        ]
    )
    if kind in IMAGE_FAULTS:
        images, n = IMAGE_FAULTS[kind](rng)
        return pb.ScoreRequest(request_id=kind, images=images, reports=_reports(rng, max(n, 1)))
    images, n = _valid_batch(rng)
    req = pb.ScoreRequest(request_id=kind, images=images, reports=_reports(rng, n))
    if kind == "anchor fault":
        fault = rng.choice(list(IMAGE_FAULTS.values()))
        bad, _ = fault(rng)
        if bad.WhichOneof("payload") is None:  # an unset anchor batch means "no anchors": send an empty one
            bad = _tensor(b"", [0, 8, 8])
        req.anchor_images.CopyFrom(bad)
    elif kind == "report count":
        del req.reports[:]
        req.reports.extend(_reports(rng, rng.choice([0, n + rng.randint(1, 3)] + ([n - 1] if n > 1 else []))))
    elif kind == "anchor count":
        m = rng.choice([k for k in range(1, 5) if k != n])
        req.anchor_images.CopyFrom(_tensor(_uint8(rng, m, 16, 16), [m, 16, 16]))
    elif kind == "weights name":
        req.weights[rng.choice(["ALIGN", "diagnostic", "posture", "", "consist ", "fid"])] = 1.0
    elif kind == "weights value":
        req.weights[rng.choice(["align", "diag", "consist"])] = rng.choice(
            [float("nan"), float("inf"), -float("inf")]
        )
    elif kind == "too many images":
        b = 1025 if rng.random() < 0.5 else 513  # 513 + 513 anchors > 1024
        req.images.CopyFrom(_tensor(bytes(b * 64), [b, 8, 8]))
        del req.reports[:]
        req.reports.extend(["r"] * b)
        if b == 513:
            req.anchor_images.CopyFrom(_tensor(bytes(b * 64), [b, 8, 8]))
    else:  # oversize: over the 2 MiB request limit of the test server, under the transport limit
        b, size = rng.randint(33, 40), 256  # 2.1-2.6 MB: over 2 MiB, under the transport limit (+1 MiB)
        req.images.CopyFrom(_tensor(bytes(b * size * size), [b, size, size]))
        del req.reports[:]
        req.reports.extend(["r"] * b)
    return req


def _predict_request(rng) -> tuple[str, pb.PredictRequest]:
    kind = rng.choice([*IMAGE_FAULTS, "report count"])
    model = rng.choice(MODELS)
    if kind in IMAGE_FAULTS:
        images, n = IMAGE_FAULTS[kind](rng)
        return model, pb.PredictRequest(request_id=kind, images=images, reports=_reports(rng, max(n, 1)))
    images, n = _valid_batch(rng)
    model = rng.choice(["diagnostic", "consistency"])  # posture accepts any number of reports
    return model, pb.PredictRequest(
        request_id=kind, images=images, reports=_reports(rng, n + rng.randint(1, 3))
    )


def _garbage_bytes(rng, message_type) -> bytes:
    """Bytes that do not parse as ``message_type`` (drawn again until they fail to)."""
    while True:
        blob = _garbage_candidate(rng)
        try:
            message_type.FromString(blob)
        except DecodeError:
            return blob


def _garbage_candidate(rng) -> bytes:
    fault = rng.randrange(4)
    if fault == 0:  # random bytes
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    valid, _ = _valid_batch(rng)
    blob = pb.ScoreRequest(images=valid, reports=["x"] * 3).SerializeToString()
    if fault == 1:  # truncated inside a field
        return blob[: rng.randint(1, len(blob) - 1)]
    if fault == 2:  # a length prefix that runs past the end
        return b"\x12" + bytes([0xFF, 0xFF, 0xFF, 0x0F]) + blob[:16]
    return b"\x1a\x03\xff\xfe\xfd"  # reports (a string field) holding invalid UTF-8


def grpc_cases(seed: int, n: int) -> list[GrpcCase]:
    """``n`` malformed gRPC requests: 70% ScoreRequests, 20% PredictRequests, 10% undecodable bytes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.7:
            req = _score_request(rng)
            out.append(GrpcCase(f"score: {req.request_id}", "reward", req))
        elif u < 0.9:
            model, req = _predict_request(rng)
            out.append(GrpcCase(f"predict: {req.request_id}", model, req))
        else:
            app = rng.choice(("reward", *MODELS))
            message_type = pb.ScoreRequest if app == "reward" else pb.PredictRequest
            out.append(GrpcCase("undecodable message", app, None, _garbage_bytes(rng, message_type)))
    return out


def _to_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _json_faults(rng) -> tuple[str, object]:
    """A body that is not valid JSON, or valid JSON of the wrong form."""
    valid, n = _valid_batch(rng)
    good = _to_json(pb.ScoreRequest(images=valid, reports=_reports(rng, n)))
    kind = rng.randrange(12)
    if kind == 0:
        text = json.dumps(good)
        return "truncated json", text[: rng.randint(0, len(text) - 1)].encode()
    if kind == 1:
        return "not json", rng.choice(
            [b"", b"hello", b"\xff\xfe\x00garbage", b"{'single': 'quotes'}", b"{,}"]
        )
    if kind == 2:
        return "json not an object", rng.choice([[], [good], 42, "images", None, True, 1.5])
    if kind == 3:
        good.pop("images")
        return "missing images", good
    if kind == 4:
        good["images"] = rng.choice(["abc", 7, [1, 2], None, {"tensor": "x"}, {"encoded": {"images": "x"}}])
        return "images wrong type", good
    if kind == 5:
        good["reports"] = rng.choice(["one report", {"a": 1}, [1, 2], [None], [["x"]]])
        return "reports wrong type", good
    if kind == 6:
        good["images"]["tensor"]["shape"] = rng.choice(
            [["a", "b"], [1.5, 8, 8], "1,8,8", [1, 1 << 40, 8], [None], {"b": 1}, [1, -(1 << 35), 8]]
        )
        return "shape wrong type", good
    if kind == 7:
        good["images"]["tensor"]["dtype"] = rng.choice(["DTYPE_INT8", "uint8", "", 1.5, [0], "DTYPE_UINT16"])
        return "dtype wrong", good
    if kind == 8:
        good["images"]["tensor"]["data"] = rng.choice(
            ["***", "abc", "not base64!", "\u00e9\u00e9", 123, ["AA=="]]
        )
        return "data not base64", good
    if kind == 9:
        good["weights"] = rng.choice(
            [{"align": "x"}, {"align": None}, [1, 2], "align", {"diag": [1]}, {"x": 1}]
        )
        return "weights wrong type", good
    if kind == 10:
        depth = rng.choice([200, 5000, 100000])
        return "deeply nested", ("[" * depth + "]" * depth).encode()
    return "request_id wrong type", {**good, "request_id": rng.choice([[1], {"a": 1}, 1e400])}


def http_cases(seed: int, n: int) -> list[HttpCase]:
    """``n`` malformed HTTP bodies: proto faults in JSON (60%) and JSON-level faults (40%)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.45:
            req = _score_request(rng)
            out.append(HttpCase(f"score: {req.request_id}", "/v1/score", _dump(_to_json(req))))
        elif u < 0.6:
            model, req = _predict_request(rng)
            out.append(HttpCase(f"predict: {req.request_id}", f"/{model}/v1/predict", _dump(_to_json(req))))
        else:
            kind, body = _json_faults(rng)
            path = "/v1/score" if rng.random() < 0.8 else f"/{rng.choice(MODELS)}/v1/predict"
            out.append(HttpCase(f"json: {kind}", path, body if isinstance(body, bytes) else _dump(body)))
    return out


def _dump(obj) -> bytes:
    return json.dumps(obj).encode()
