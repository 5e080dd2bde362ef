"""Proto <-> tensor codec of the reward services: every bad input is a ValueError with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrl import imaging
from cxrl.client import decode_score_responses
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.types import PAPER_WEIGHTS, Components, ModelInfo, RewardResult
from services import codec


def raw_batch(images: torch.Tensor, dtype: str = "uint8") -> pb.ImageBatch:
    data, shape, _ = imaging.to_raw(images, dtype)
    enum = {"uint8": pb.DTYPE_UINT8, "float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16}[dtype]
    return pb.ImageBatch(tensor=pb.Tensor(data=data, shape=shape, dtype=enum))


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return imaging.from_uint8(imaging.to_uint8(torch.rand(3, 1, 16, 16)))  # [3,1,16,16] on the uint8 grid


def test_raw_uint8_float32_and_png_decode_to_the_same_images(images):
    png = pb.ImageBatch(encoded=pb.EncodedImages(images=imaging.encode_pngs(images)))
    for batch in (raw_batch(images), raw_batch(images, "float32"), png):
        out = codec.decode_images(batch)
        assert out.shape == (3, 1, 16, 16) and torch.allclose(out, images, atol=1e-7)


def test_score_request_decodes_with_default_and_subset_weights(images):
    req = pb.ScoreRequest(images=raw_batch(images), reports=["a", "b", "c"], anchor_images=raw_batch(images))
    inputs = codec.decode_score_request(req, PAPER_WEIGHTS)
    assert inputs.weights == PAPER_WEIGHTS and inputs.anchor_images.shape == images.shape
    req.weights["consist"] = 2.0
    req.weights["align"] = 0.5
    assert list(codec.decode_score_request(req, PAPER_WEIGHTS).weights.items()) == [
        ("align", 0.5),
        ("consist", 2.0),
    ]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r, x: r.images.tensor.shape.__setitem__(0, 4), "needs"),  # byte count vs shape
        (
            lambda r, x: r.images.tensor.ClearField("shape") or r.images.tensor.shape.extend([3, 2, 16, 16]),
            "shape",
        ),
        (
            lambda r, x: setattr(r.images.tensor, "dtype", pb.DTYPE_FLOAT32),
            "needs",
        ),  # uint8 bytes sent as float32
        (
            lambda r, x: r.images.CopyFrom(
                pb.ImageBatch(encoded=pb.EncodedImages(images=[b"not a png"] * 3))
            ),
            "images: image bytes .image 0. are not a PNG",
        ),
        (lambda r, x: r.reports.pop(), "3 images but 2 reports"),
        (lambda r, x: r.ClearField("images"), "no images"),
        (lambda r, x: r.anchor_images.CopyFrom(raw_batch(x[:2])), "anchor"),
        (lambda r, x: r.weights.__setitem__("beauty", 1.0), "unknown reward"),
        (lambda r, x: r.weights.__setitem__("diag", float("nan")), "finite"),
    ],
)
def test_bad_requests_raise_value_error_saying_what_is_wrong(images, mutate, message):
    req = pb.ScoreRequest(images=raw_batch(images), reports=["a", "b", "c"])
    mutate(req, images)
    with pytest.raises(ValueError, match=message):
        codec.decode_score_request(req, PAPER_WEIGHTS)


def test_nan_and_out_of_range_float_images_are_rejected(images):
    bad = images.clone().numpy().astype(np.float32)
    bad[1, 0, 2, 2] = np.nan
    batch = pb.ImageBatch(tensor=pb.Tensor(data=bad.tobytes(), shape=[3, 1, 16, 16], dtype=pb.DTYPE_FLOAT32))
    with pytest.raises(ValueError, match="NaN"):
        codec.decode_images(batch)
    bad = (images.numpy() * 3).astype(np.float32)
    batch.tensor.data = bad.tobytes()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        codec.decode_images(batch)


def test_empty_batch_and_size_limit():
    empty = pb.ImageBatch(tensor=pb.Tensor(data=b"", shape=[0, 16, 16]))
    with pytest.raises(ValueError, match="positive|empty"):
        codec.decode_images(empty)
    with pytest.raises(ValueError, match="over the server's limit of 100 bytes"):
        codec.check_size(101, 100)
    codec.check_size(10**9, 0)  # 0 = no limit


def test_response_encoding_round_trips_through_the_client_decoder():
    torch.manual_seed(1)
    policy = Components(
        psi=torch.randn(2, 5),
        r_align=torch.randn(2),
        diag_acc=torch.rand(2),
        diag_probs=torch.rand(2, 18),
        consistency=torch.rand(2),
    )
    anchor = Components(diag_acc=torch.rand(2), diag_probs=torch.rand(2, 18), consistency=torch.rand(2))
    result = RewardResult(policy, anchor, torch.randn(2), [ModelInfo("m", "v1", "ab" * 32)])
    message = codec.encode_score_response("rid", result, {"align": 1.0})
    assert message.request_id == "rid" and message.comparative and len(message.diag_labels) == 18
    assert not message.results[0].anchor.HasField("r_align")
    back = decode_score_responses([pb.ScoreResponse.FromString(message.SerializeToString())])
    for name in ("psi", "r_align", "diag_acc", "diag_probs", "consistency"):
        assert torch.equal(getattr(back.policy, name), getattr(policy, name)), name
    assert back.anchor.psi is None and torch.equal(back.anchor.consistency, anchor.consistency)
    assert torch.equal(back.total, result.total) and back.models == result.models


def test_raw_uint8_stays_uint8_for_the_replicas(images):
    req = pb.ScoreRequest(
        images=raw_batch(images), reports=["a", "b", "c"], anchor_images=raw_batch(images, "float32")
    )
    inputs = codec.decode_score_request(req, PAPER_WEIGHTS)
    assert inputs.images.dtype == torch.uint8 and inputs.images.shape == (3, 1, 16, 16)
    assert inputs.anchor_images.dtype == torch.float32
    assert torch.equal(codec.as_float(inputs.images), images)
    tiny = pb.ImageBatch(tensor=pb.Tensor(data=bytes(3 * 4 * 4), shape=[3, 4, 4]))
    with pytest.raises(ValueError, match="at least 8x8"):
        codec.decode_images_compact(tiny)


def test_limits_are_checked_from_headers_before_any_image_is_decoded():
    from _payloads import png_bomb

    limits = codec.Limits(max_batch_images=8, max_request_pixels=4 << 20, max_report_chars=100)

    def request(blobs, anchors=None, reports=None):
        req = pb.ScoreRequest(images=pb.ImageBatch(encoded=pb.EncodedImages(images=blobs)))
        req.reports.extend(reports or ["r"] * len(blobs))
        if anchors is not None:
            req.anchor_images.CopyFrom(pb.ImageBatch(encoded=pb.EncodedImages(images=anchors)))
        return req

    bomb = png_bomb(13000, 13000)  # 169 Mpx in 164 kB
    with pytest.raises(ValueError, match=r"images: image \(image 0\) is 13000x13000 = 169000000 pixels"):
        codec.decode_score_request(request([bomb]), PAPER_WEIGHTS, limits)
    # garbage blobs: the count is refused first (nothing decoded, so no "not a PNG" error)
    with pytest.raises(ValueError, match="10 images .policy . anchor. in one request; .* at most 8"):
        codec.decode_score_request(request([b"junk"] * 5, [b"junk"] * 5), PAPER_WEIGHTS, limits)
    big = png_bomb(1024, 1024)  # within the per-image cap; 3 + 3 of them are 6 Mpx > 4 Mi px
    with pytest.raises(ValueError, match="decode to 6291456 pixels, over the server's limit of 4194304"):
        codec.decode_score_request(request([big] * 3, [big] * 3), PAPER_WEIGHTS, limits)
    with pytest.raises(ValueError, match="report 1 is 101 characters, over the limit of 100"):
        codec.check_request(request([big, big], reports=["ok", "x" * 101]), limits)
    raw = pb.ScoreRequest(images=pb.ImageBatch(tensor=pb.Tensor(data=b"", shape=[1, 20000, 20000])))
    raw.reports.append("r")
    with pytest.raises(ValueError, match="20000x20000 = 400000000 pixels"):  # raw shapes too
        codec.decode_score_request(raw, PAPER_WEIGHTS, limits)
    assert codec.decode_score_request(request([big] * 2), PAPER_WEIGHTS, limits).images.shape == (
        2,
        1,
        1024,
        1024,
    )
