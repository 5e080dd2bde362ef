"""The reward services for real: `cxrl serve` (Ray Serve, CPU profile, random-weight models) over
real gRPC and HTTP, with a real redis-server as the score cache. One Ray start per session.

Checks: results equal the in-process scorers to 1e-5; every kind of bad input gets
INVALID_ARGUMENT / 422 and the service keeps serving; bearer-token auth; the cache; the
client's batch splitting; `cxrl score`; clean shutdown on SIGINT leaving no process behind.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import redis
import torch
from _serve import random_config

from cxrl import imaging
from cxrl.cli import main as cxrl_main
from cxrl.client import RewardClient, RewardServiceError
from cxrl.infra.redis_local import LocalRedis
from cxrl.infra.serve_process import ServeProcess
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.reward.v1 import reward_pb2_grpc as pb_grpc
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers

pytestmark = [pytest.mark.service, pytest.mark.slow]  # one Ray start: ~1-3 min on 2 cores

TOKEN = "test-token-7"
MAX_REQUEST_BYTES = 2 << 20
REPORTS = [
    "No acute cardiopulmonary process.",
    "Large right pleural effusion.",
    "Cardiomegaly with mild pulmonary edema.",
    "Left pneumothorax.",
    "Right lower lobe consolidation, likely pneumonia.",
    "Normal heart size. No effusion.",
]
FIELDS = ("psi", "r_align", "diag_acc", "diag_probs", "consistency")


@dataclass
class Service:
    grpc_target: str
    http_url: str
    redis_url: str
    log: Path


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    config, log = root / "serve.yaml", root / "serve.log"
    random_config(config, gateway_args={"max_request_bytes": MAX_REQUEST_BYTES})
    with LocalRedis() as redis_url:
        env = {"REDIS_URL": redis_url, "CXRL_API_TOKEN": TOKEN}
        with ServeProcess(config, log, num_cpus=2, env=env) as serve:
            yield Service(serve.grpc_target, serve.http_url, redis_url, log)
        assert serve.stopped_cleanly, (
            f"unclean shutdown (rc={serve.returncode}, left {serve.left}):\n{serve.log_tail(3000)}"
        )


@pytest.fixture(scope="module")
def reference():
    return InProcessRewards(*random_scorers(0))


def _batch(b=6, size=64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return imaging.from_uint8(imaging.to_uint8(torch.rand(b, 1, size, size, generator=g)))  # uint8 grid


def _assert_same(got, want):
    torch.testing.assert_close(got.total, want.total, atol=1e-5, rtol=0)
    for side in ("policy", "anchor"):
        g, w = getattr(got, side), getattr(want, side)
        assert (g is None) == (w is None), side
        for name in FIELDS if g is not None else ():
            gv, wv = getattr(g, name), getattr(w, name)
            assert (gv is None) == (wv is None), f"{side}.{name}"
            if gv is not None:
                torch.testing.assert_close(gv, wv, atol=1e-5, rtol=0)
    assert sorted(got.models, key=str) == sorted(want.models, key=str)


def _grpc(service, application="reward", token=TOKEN):
    channel = grpc.insecure_channel(service.grpc_target)
    md = [("application", application)] + ([("authorization", f"Bearer {token}")] if token else [])
    return channel, md


def _raw(images: torch.Tensor) -> pb.ImageBatch:
    data, shape, _ = imaging.to_raw(images)
    return pb.ImageBatch(tensor=pb.Tensor(data=data, shape=shape))


# --- equality with in-process scoring ---------------------------------------------------------


def test_grpc_comparative_scores_equal_in_process(service, reference):
    x, a = _batch(seed=1), _batch(seed=2)
    with RewardClient(service.grpc_target, token=TOKEN) as client:
        got = client.score(x, REPORTS, a)
    _assert_same(got, reference.score(x, REPORTS, a))
    assert got.anchor is not None and got.anchor.psi is None


def test_grpc_direct_feedback_and_reward_subset(service, reference):
    x = _batch(seed=3)
    with RewardClient(service.grpc_target, token=TOKEN) as client:
        _assert_same(
            client.score(x, REPORTS),
            InProcessRewards(*reference_scorers(reference), rlcf=False).score(x, REPORTS),
        )
    weights = {"diag": 3.0, "consist": 0.5}
    with RewardClient(service.grpc_target, token=TOKEN, weights=weights) as client:
        got = client.score(x, REPORTS, _batch(seed=4))
    want = InProcessRewards(None, reference.diagnostic, reference.consistency, weights=weights)
    _assert_same(got, want.score(x, REPORTS, _batch(seed=4)))
    assert got.policy.psi is None and {m.name for m in got.models} == {"xrv-densenet-small", "cxr-clip-small"}


def reference_scorers(reference):
    return reference.posture, reference.diagnostic, reference.consistency


def test_http_png_request_equals_in_process(service, reference):
    x, a = _batch(seed=5), _batch(seed=6)
    pngs = lambda t: {"encoded": {"images": [base64.b64encode(p).decode() for p in imaging.encode_pngs(t)]}}  # noqa: E731
    body = {"request_id": "h1", "images": pngs(x), "anchor_images": pngs(a), "reports": REPORTS}
    r = httpx.post(
        f"{service.http_url}/v1/score", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    data = r.json()
    want = reference.score(x, REPORTS, a)
    assert data["request_id"] == "h1" and data["comparative"] and len(data["diag_labels"]) == 18
    totals = torch.tensor([item["total"] for item in data["results"]])
    torch.testing.assert_close(totals, want.total, atol=1e-5, rtol=0)
    probs = torch.tensor([item["anchor"]["diag_probs"] for item in data["results"]])
    torch.testing.assert_close(probs, want.anchor.diag_probs, atol=1e-5, rtol=0)


def test_client_splits_large_batches_against_the_server(service, reference):
    x, a = _batch(b=5, seed=7), _batch(b=5, seed=8)
    reports = REPORTS[:5]
    with RewardClient(service.grpc_target, token=TOKEN, max_batch_images=2) as client:
        _assert_same(client.score(x, reports, a), reference.score(x, reports, a))


def test_each_model_application_answers_directly(service, reference):
    x = _batch(seed=9)
    with RewardClient(service.grpc_target, token=TOKEN) as client:
        torch.testing.assert_close(
            client.predict("posture", x).psi, reference.posture(x).psi, atol=1e-5, rtol=0
        )
        got = client.predict("diagnostic", x, REPORTS)
        torch.testing.assert_close(got.diag_acc, reference.diagnostic(x, REPORTS).diag_acc, atol=1e-5, rtol=0)
        got = client.predict("consistency", x, REPORTS)
        want = reference.consistency(x, REPORTS).consistency
        torch.testing.assert_close(got.consistency, want, atol=1e-5, rtol=0)
    channel, md = _grpc(service, "diagnostic")
    info = pb_grpc.ModelServiceStub(channel).Info(pb.InfoRequest(), metadata=md, timeout=30)
    assert [m.name for m in info.models] == ["xrv-densenet-small"] and info.models[
        0
    ].version == "random-seed0"
    body = {
        "images": {
            "tensor": {"data": base64.b64encode(imaging.to_raw(x)[0]).decode(), "shape": [6, 1, 64, 64]}
        }
    }
    r = httpx.post(
        f"{service.http_url}/posture/v1/predict", json=body, headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 200, r.text
    psi = torch.tensor([item["psi"] for item in r.json()["results"]])
    torch.testing.assert_close(psi, reference.posture(x).psi, atol=1e-5, rtol=0)


def test_info_over_grpc_and_http(service, reference):
    with RewardClient(service.grpc_target, token=TOKEN) as client:
        assert sorted(client.info(), key=str) == sorted(reference.info(), key=str)
        assert client.server_info().max_request_bytes == MAX_REQUEST_BYTES
    r = httpx.get(f"{service.http_url}/v1/info", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["default_weights"] == {
        "align": 1.0,
        "diag": 10.0,
        "consist": 10.0,
    }
    assert httpx.get(f"{service.http_url}/docs").status_code == 200
    assert "/v1/score" in httpx.get(f"{service.http_url}/openapi.json").json()["paths"]


# --- bad input ---------------------------------------------------------------------------------


def _bad_requests() -> dict[str, tuple[pb.ScoreRequest, str]]:
    x = _batch(b=2, size=32)
    good = lambda: pb.ScoreRequest(images=_raw(x), reports=REPORTS[:2])  # noqa: E731
    cases = {}
    r = good()
    r.images.tensor.shape[:] = [2, 3, 32, 32]
    cases["wrong shape"] = (r, "shape")
    r = good()
    r.images.tensor.dtype = pb.DTYPE_FLOAT32
    cases["wrong dtype"] = (r, "needs")
    cases["undecodable png"] = (
        pb.ScoreRequest(
            images=pb.ImageBatch(encoded=pb.EncodedImages(images=[b"\x89PNG garbage"])), reports=["a"]
        ),
        "not a PNG",  # refused from its (missing) header, before any decoding
    )
    r = good()
    r.reports.append("extra")
    cases["count mismatch"] = (r, "2 images but 3 reports")
    cases["empty batch"] = (
        pb.ScoreRequest(images=pb.ImageBatch(tensor=pb.Tensor(shape=[0, 32, 32]))),
        "positive",
    )
    nan = x.numpy().copy()
    nan[0, 0, 0, 0] = np.nan
    cases["nan"] = (
        pb.ScoreRequest(
            images=pb.ImageBatch(
                tensor=pb.Tensor(data=nan.tobytes(), shape=[2, 1, 32, 32], dtype=pb.DTYPE_FLOAT32)
            ),
            reports=REPORTS[:2],
        ),
        "NaN",
    )
    big = _batch(b=40, size=256)  # 2.6 MB of uint8 > 2 MiB server limit
    cases["oversize"] = (pb.ScoreRequest(images=_raw(big), reports=["r"] * 40), "over the server's limit")
    return cases


BAD = _bad_requests()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_invalid_argument_over_grpc(service, case):
    request, message = BAD[case]
    channel, md = _grpc(service)
    stub = pb_grpc.RewardServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(request, metadata=md, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert message in err.value.details()
    ok = stub.Score(pb.ScoreRequest(images=_raw(_batch(b=1)), reports=["ok"]), metadata=md, timeout=60)
    assert len(ok.results) == 1  # still serving


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_422_over_http(service, case):
    from google.protobuf import json_format

    request, message = BAD[case]
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    r = httpx.post(
        f"{service.http_url}/v1/score", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert r.status_code == 422 and message in r.text, r.text


def test_malformed_json_is_422(service):
    r = httpx.post(
        f"{service.http_url}/v1/score",
        json={"images": {"tensor": {"data": "!!"}}},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 422


# --- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong"])
def test_grpc_without_the_token_is_unauthenticated(service, token):
    for application, call in (
        ("reward", lambda ch: pb_grpc.RewardServiceStub(ch).Info),
        ("posture", lambda ch: pb_grpc.ModelServiceStub(ch).Info),
    ):
        channel, md = _grpc(service, application, token=token)
        with pytest.raises(grpc.RpcError) as err:
            call(channel)(pb.InfoRequest(), metadata=md, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with (
        RewardClient(service.grpc_target, token=token or "") as client,
        pytest.raises(RewardServiceError) as err,
    ):
        client.score(_batch(b=1), ["x"])
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_http_without_the_token_is_401(service):
    assert httpx.get(f"{service.http_url}/v1/info").status_code == 401
    assert (
        httpx.get(f"{service.http_url}/v1/info", headers={"authorization": "Bearer nope"}).status_code == 401
    )
    assert httpx.get(f"{service.http_url}/diagnostic/v1/info").status_code == 401
    assert httpx.post(f"{service.http_url}/v1/score", json={"images": {}, "reports": []}).status_code == 401


# --- cache and CLI -----------------------------------------------------------------------------


def test_scores_are_cached_per_model_and_reused(service, reference):
    x, a = _batch(b=3, seed=11), _batch(b=3, seed=12)
    r = redis.Redis.from_url(service.redis_url)
    with RewardClient(service.grpc_target, token=TOKEN) as client:
        first = client.score(x, REPORTS[:3], a)
        keys = {k.decode() for k in r.keys("cxrl:score:v2:*")}
        hits = r.info("stats")["keyspace_hits"]
        second = client.score(x, REPORTS[:3], a)
    for model in ("posture-resnet18", "xrv-densenet-small", "cxr-clip-small"):
        assert any(k.startswith(f"cxrl:score:v2:{model}:random-seed0:") for k in keys), model
    assert r.info("stats")["keyspace_hits"] >= hits + 3 + 6 + 6  # posture: 3 images; others: 3 + 3 anchors
    _assert_same(second, first)
    _assert_same(second, reference.score(x, REPORTS[:3], a))


def test_cxrl_score_command(service, reference, tmp_path, capsys, monkeypatch):
    x, a = _batch(b=4, seed=13), _batch(b=4, seed=14)
    (tmp_path / "gen").mkdir()
    (tmp_path / "anchor").mkdir()
    names = [f"img_{i:02d}.png" for i in range(4)]
    for i, name in enumerate(names):
        imaging.save_image(x[i], tmp_path / "gen" / name)
        imaging.save_image(a[i], tmp_path / "anchor" / name)
    (tmp_path / "reports.txt").write_text("\n".join(REPORTS[:4]) + "\n")
    monkeypatch.setenv("CXRL_API_TOKEN", TOKEN)
    out = tmp_path / "scores.json"
    argv = ["score", "--images", str(tmp_path / "gen"), "--reports", str(tmp_path / "reports.txt")]
    argv += ["--anchor-images", str(tmp_path / "anchor"), "--server", service.grpc_target, "--json", str(out)]
    assert cxrl_main(argv) == 0
    table = capsys.readouterr().out
    assert "total" in table and "anchor diag_acc" in table and "cxr-clip-small" in table
    data = json.loads(out.read_text())
    want = reference.score(x, REPORTS[:4], a)
    assert [item["file"] for item in data["images"]] == names and data["comparative"]
    torch.testing.assert_close(
        torch.tensor([i["total"] for i in data["images"]]), want.total, atol=1e-5, rtol=0
    )
