"""The reward API proto: generated stubs import, defaults and wire round trips (needs `make protos`)."""

from __future__ import annotations

from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.reward.v1 import reward_pb2_grpc as pb_grpc


def test_uint8_is_the_default_dtype():
    assert pb.Tensor().dtype == pb.DTYPE_UINT8
    assert pb.DType.Name(0) == "DTYPE_UINT8"


def test_score_request_round_trips_on_the_wire():
    req = pb.ScoreRequest(
        request_id="r1",
        images=pb.ImageBatch(tensor=pb.Tensor(data=b"\x00\x01" * 32, shape=[1, 8, 8])),
        reports=["No acute disease."],
        anchor_images=pb.ImageBatch(encoded=pb.EncodedImages(images=[b"png"])),
        weights={"align": 1.0, "diag": 10.0},
    )
    back = pb.ScoreRequest.FromString(req.SerializeToString())
    assert back == req
    assert back.images.WhichOneof("payload") == "tensor"
    assert back.anchor_images.WhichOneof("payload") == "encoded"
    assert dict(back.weights) == {"align": 1.0, "diag": 10.0}


def test_optional_components_distinguish_unset_from_zero():
    c = pb.Components(diag_acc=0.0)
    assert c.HasField("diag_acc") and not c.HasField("r_align") and not c.HasField("consistency")
    result = pb.ImageResult(policy=c, total=1.5)
    assert not result.HasField("anchor")


def test_services_and_servicer_functions_exist():
    for service, methods in (("RewardService", {"Score", "Info"}), ("ModelService", {"Predict", "Info"})):
        desc = pb.DESCRIPTOR.services_by_name[service]
        assert {m.name for m in desc.methods} == methods
        assert callable(getattr(pb_grpc, f"add_{service}Servicer_to_server"))
    assert pb.DESCRIPTOR.package == "cxrl.reward.v1"
