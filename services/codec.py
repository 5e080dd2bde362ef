"""Proto messages <-> tensors for the reward services.

Pure functions: every image conversion goes through ``cxrl.imaging``; every
problem with a request raises ``ValueError`` with a message that says what was
wrong (the servicers turn it into INVALID_ARGUMENT / HTTP 422).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cxrl import imaging
from cxrl.labels import XRV_PATHOLOGIES
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.types import REWARD_NAMES, Components, ModelInfo, RewardResult

DTYPE_NAMES = {pb.DTYPE_UINT8: "uint8", pb.DTYPE_FLOAT32: "float32", pb.DTYPE_FLOAT16: "float16"}
DIAG_LABELS: tuple[str, ...] = XRV_PATHOLOGIES  # order of Components.diag_probs


def diag_columns(models) -> tuple[list[int], tuple[str, ...]]:
    """The diag_probs columns a response carries and their labels: those no model declares unscored
    (an unscored label is never sent as NaN; ModelInfo.unscored_labels names it)."""
    unscored = {label for m in models for label in m.unscored_labels}
    keep = [j for j, label in enumerate(DIAG_LABELS) if label not in unscored]
    return keep, tuple(DIAG_LABELS[j] for j in keep)


class Refused(ValueError):
    """A request over one of the server's limits; ``reason`` names which (size, images, pixels,
    report), for the refusal metrics (``services.metrics``). Still a ``ValueError``: INVALID_ARGUMENT."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """What one request may hold; every limit is checked before any image is decoded."""

    max_request_bytes: int = 64 << 20  # serialized request size (0 = no limit)
    max_batch_images: int = 1024  # images in one request, policy + anchor
    max_image_pixels: int = imaging.MAX_IMAGE_PIXELS  # pixels of one image (header / shape)
    max_request_pixels: int = 64 << 20  # decoded pixels per request, policy + anchor (4 B each as float)
    max_report_chars: int = 8192  # characters of one report


@dataclass
class ScoreInputs:
    """A decoded, validated ScoreRequest."""

    images: torch.Tensor  # [B,1,H,W] float in [0,1], or uint8 0..255 as sent
    reports: list[str]  # B
    anchor_images: torch.Tensor | None  # [B,1,H,W] (float or uint8) or None
    weights: dict[str, float]  # subset of REWARD_NAMES, defaults applied


def check_size(nbytes: int, limit: int) -> None:
    """Reject requests over the server's size limit (INVALID_ARGUMENT, not a transport error)."""
    if limit > 0 and nbytes > limit:
        raise Refused(
            "size",
            f"request is {nbytes} bytes, over the server's limit of {limit} bytes; "
            "split the batch into smaller requests (cxrl.client does this automatically)",
        )


def batch_count(batch: pb.ImageBatch) -> int:
    """Images in a batch as its header says (0 when it says nothing usable); nothing is decoded."""
    kind = batch.WhichOneof("payload")
    if kind == "encoded":
        return len(batch.encoded.images)
    shape = list(batch.tensor.shape) if kind == "tensor" else []
    return max(shape[0], 0) if len(shape) in (3, 4) else 0


def batch_pixels(batch: pb.ImageBatch, limits: Limits, what: str) -> int:
    """Pixels the batch decodes to, from PNG headers or the tensor shape; refuses an image over
    ``limits.max_image_pixels`` (decoding is left to the decoder's own checks)."""
    kind = batch.WhichOneof("payload")
    shape = list(batch.tensor.shape)
    try:
        if kind == "encoded":
            sizes = [imaging.png_size(blob, i) for i, blob in enumerate(batch.encoded.images)]
        elif kind == "tensor" and len(shape) in (3, 4) and min(shape) > 0:
            sizes = [(shape[-1], shape[-2])] * shape[0]
        else:
            return 0
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    try:
        for i, (w, h) in enumerate(sizes):
            imaging.check_pixels(w, h, limits.max_image_pixels, f" (image {i})")
    except ValueError as exc:
        raise Refused("pixels", f"{what}: {exc}") from None
    return sum(w * h for w, h in sizes)


def check_request(req: pb.ScoreRequest | pb.PredictRequest, limits: Limits) -> None:
    """Size, image count, per-image and per-request pixels and report lengths, from headers only."""
    check_size(req.ByteSize(), limits.max_request_bytes)
    batches = [("images", req.images)]
    if isinstance(req, pb.ScoreRequest) and req.HasField("anchor_images"):
        batches.append(("anchor_images", req.anchor_images))
    n = sum(batch_count(b) for _, b in batches)
    if n > limits.max_batch_images:
        raise Refused(
            "images",
            f"{n} images (policy + anchor) in one request; the server takes at most "
            f"{limits.max_batch_images}: split the batch (cxrl.client does this automatically)",
        )
    pixels = sum(batch_pixels(b, limits, what) for what, b in batches)
    if limits.max_request_pixels and pixels > limits.max_request_pixels:
        raise Refused(
            "pixels",
            f"the images of this request decode to {pixels} pixels, over the server's limit of "
            f"{limits.max_request_pixels} per request; send fewer or smaller images per request",
        )
    check_report_lengths(req.reports, limits.max_report_chars)


def check_report_lengths(reports, max_chars: int) -> None:
    for i, report in enumerate(reports):
        if max_chars and len(report) > max_chars:
            raise Refused(
                "report",
                f"report {i} is {len(report)} characters, over the limit of {max_chars}; "
                "send the findings/impression sections only (the models read the first tokens)",
            )


def decode_images(batch: pb.ImageBatch, what: str = "images", limits: Limits | None = None) -> torch.Tensor:
    """An ImageBatch (raw tensor or encoded images) -> float ``[B,1,H,W]`` in [0,1]."""
    return as_float(decode_images_compact(batch, what, limits))


def decode_images_compact(
    batch: pb.ImageBatch, what: str = "images", limits: Limits | None = None
) -> torch.Tensor:
    """Like ``decode_images``, but a raw uint8 tensor stays uint8 ``[B,1,H,W]`` (4x less to pass to
    the model replicas, which convert it with ``as_float``); everything else is float in [0,1]."""
    kind = batch.WhichOneof("payload")
    try:
        if kind == "tensor":
            t = batch.tensor
            if t.dtype not in DTYPE_NAMES:
                raise ValueError(f"unknown dtype enum value {t.dtype}; use UINT8, FLOAT32 or FLOAT16")
            if t.dtype == pb.DTYPE_UINT8 and (raw := _uint8_view(t.data, list(t.shape))) is not None:
                return raw
            images = imaging.from_raw(t.data, list(t.shape), DTYPE_NAMES[t.dtype])  # also says what is wrong
        elif kind == "encoded":
            limits = limits or Limits()
            images = imaging.decode_pngs(
                list(batch.encoded.images), limits.max_image_pixels, limits.max_request_pixels
            )
        else:
            raise ValueError("no images sent; set either `tensor` or `encoded`")
        return imaging.validate(images, what)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _uint8_view(data: bytes, shape: list[int]) -> torch.Tensor | None:
    """uint8 bytes as a ``[B,1,H,W]`` uint8 tensor when they are well-formed and at least 8x8,
    else None (``imaging.from_raw``/``validate`` then raise the precise error)."""
    if len(shape) == 3:
        shape = [shape[0], 1, shape[1], shape[2]]
    if len(shape) != 4 or shape[1] != 1 or min(shape) <= 0 or min(shape[2:]) < 8:
        return None
    if len(data) != shape[0] * shape[2] * shape[3]:
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(shape)


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B,1,H,W]`` (0..255) or float -> float ``[B,1,H,W]`` in [0,1] via cxrl.imaging."""
    return imaging.from_uint8(images) if images.dtype == torch.uint8 else images


def decode_weights(weights: dict[str, float], defaults: dict[str, float]) -> dict[str, float]:
    """Requested weights (a subset of REWARD_NAMES), or the server defaults when empty."""
    if not weights:
        return dict(defaults)
    unknown = sorted(set(weights) - set(REWARD_NAMES))
    if unknown:
        raise ValueError(f"unknown reward names {unknown} in weights; use a subset of {list(REWARD_NAMES)}")
    bad = [k for k, v in weights.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"weights must be finite numbers; {bad} are not")
    return {name: float(weights[name]) for name in REWARD_NAMES if name in weights}


def decode_reports(reports, n_images: int) -> list[str]:
    reports = list(reports)
    if len(reports) != n_images:
        raise ValueError(
            f"got {n_images} images but {len(reports)} reports; send exactly one report per image"
        )
    return reports


def decode_score_request(
    req: pb.ScoreRequest, defaults: dict[str, float], limits: Limits | None = None
) -> ScoreInputs:
    """Validated inputs; raw uint8 images stay uint8 (see ``decode_images_compact``).
    Every limit is checked from the headers (``check_request``) before anything is decoded."""
    limits = limits or Limits()
    check_request(req, limits)
    weights = decode_weights(dict(req.weights), defaults)
    images = decode_images_compact(req.images, "images", limits)
    reports = decode_reports(req.reports, images.shape[0])
    anchors = None
    if req.HasField("anchor_images"):
        anchors = decode_images_compact(req.anchor_images, "anchor_images", limits)
        if anchors.shape[0] != images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images but {anchors.shape[0]} anchor images; "
                "send one anchor per image (same report, same noise)"
            )
    return ScoreInputs(images, reports, anchors, weights)


def decode_predict_request(
    req: pb.PredictRequest, uses_reports: bool = True, limits: Limits | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Images and reports of a PredictRequest; a model that ignores reports accepts none."""
    check_request(req, limits or Limits())
    images = decode_images(req.images, "images", limits)
    if not uses_reports and not req.reports:
        return images, [""] * images.shape[0]
    return images, decode_reports(req.reports, images.shape[0])


def encode_components(c: Components, i: int, diag_keep: list[int] | None = None) -> pb.Components:
    """Row ``i`` of a batch's Components -> one proto Components (unset where not computed);
    ``diag_keep``: the diag_probs columns to send (default all)."""
    out = pb.Components()
    if c.psi is not None:
        out.psi.extend(c.psi[i].tolist())
    if c.r_align is not None:
        out.r_align = float(c.r_align[i])
    if c.diag_acc is not None:
        out.diag_acc = float(c.diag_acc[i])
    if c.diag_probs is not None:
        row = c.diag_probs[i] if diag_keep is None else c.diag_probs[i, diag_keep]
        out.diag_probs.extend(row.tolist())
    if c.consistency is not None:
        out.consistency = float(c.consistency[i])
    return out


def encode_model_info(info: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        version=info.version,
        weights_hash=info.weights_hash,
        unscored_labels=info.unscored_labels,
    )


def encode_score_response(
    request_id: str, result: RewardResult, weights: dict[str, float]
) -> pb.ScoreResponse:
    n = result.total.shape[0]
    keep, labels = diag_columns(result.models)
    out = pb.ScoreResponse(
        request_id=request_id,
        weights=weights,
        comparative=result.anchor is not None,
        models=[encode_model_info(m) for m in result.models],
        diag_labels=labels if result.policy.diag_probs is not None else (),
    )
    for i in range(n):
        item = out.results.add(total=float(result.total[i]))
        item.policy.CopyFrom(encode_components(result.policy, i, keep))
        if result.anchor is not None:
            item.anchor.CopyFrom(encode_components(result.anchor, i, keep))
    return out


def encode_predict_response(request_id: str, c: Components, n: int, info: ModelInfo) -> pb.PredictResponse:
    keep, labels = diag_columns([info])
    return pb.PredictResponse(
        request_id=request_id,
        results=[encode_components(c, i, keep) for i in range(n)],
        model=encode_model_info(info),
        diag_labels=labels if c.diag_probs is not None else (),
    )
