"""cxrl.client against a real in-process gRPC server with a scripted RewardService."""

from __future__ import annotations

import json
import time
from concurrent import futures

import grpc
import pytest
import torch

from cxrl import imaging
from cxrl.client import RewardClient, RewardServiceError, parse_target
from cxrl.infra.ports import free_port
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.reward.v1 import reward_pb2_grpc as pb_grpc
from cxrl.rewards.types import PAPER_WEIGHTS
from services import codec


class ScriptedRewards(pb_grpc.RewardServiceServicer):
    """Fails the first ``fail`` Score calls with ``code``; otherwise total = mean pixel of each image."""

    def __init__(
        self, max_request_bytes=1 << 20, max_batch_images=0, fail=0, code=grpc.StatusCode.UNAVAILABLE
    ):
        self.limits = (max_request_bytes, max_batch_images)
        self.fail, self.code = fail, code
        self.requests, self.metadata, self.sleep_s = [], [], 0.0

    def Info(self, request, context):
        return pb.InfoResponse(max_request_bytes=self.limits[0], max_batch_images=self.limits[1])

    def Score(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        time.sleep(self.sleep_s)
        if self.fail > 0:
            self.fail -= 1
            context.abort(self.code, "scripted failure")
        self.requests.append(request)
        try:
            inputs = codec.decode_score_request(request, PAPER_WEIGHTS)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        out = pb.ScoreResponse(request_id=request.request_id, comparative=inputs.anchor_images is not None)
        means = codec.as_float(inputs.images).mean(dim=(1, 2, 3))
        for i, m in enumerate(means.tolist()):
            item = out.results.add(total=m)
            item.policy.r_align = -m
            if inputs.anchor_images is not None:
                item.anchor.diag_acc = float(codec.as_float(inputs.anchor_images)[i].mean())
        out.models.add(name="scripted", version="1", weights_hash="00")
        return out


@pytest.fixture
def server():
    servicers = []

    def start(servicer):
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_RewardServiceServicer_to_server(servicer, srv)
        port = srv.add_insecure_port("127.0.0.1:0")
        srv.start()
        servicers.append(srv)
        return f"127.0.0.1:{port}"

    yield start
    for srv in servicers:
        srv.stop(None)


def _images(b=10, size=32):
    torch.manual_seed(0)
    return imaging.from_uint8(imaging.to_uint8(torch.rand(b, 1, size, size)))  # on the uint8 grid


def test_parse_target():
    assert parse_target("grpc://reward:9000") == "reward:9000"
    assert parse_target("127.0.0.1:9000") == "127.0.0.1:9000"
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_target("http://reward")


def test_scores_and_sends_application_and_token(server):
    svc = ScriptedRewards()
    x = _images(3)
    with RewardClient(server(svc), token="s3cret") as client:
        result = client.score(x, ["a", "b", "c"])
    torch.testing.assert_close(result.total, x.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
    assert result.anchor is None and result.models[0].name == "scripted"
    assert svc.metadata[0]["application"] == "reward" and svc.metadata[0]["authorization"] == "Bearer s3cret"


def test_large_batches_are_split_to_fit_and_reassembled_in_order(server):
    # 32x32 uint8 = 1 KiB per image, 2 KiB per policy/anchor pair: a 6 KiB limit fits 2 pairs
    svc = ScriptedRewards(max_request_bytes=6 * 1024)
    x, a = _images(7), _images(7).flip(0)
    with RewardClient(server(svc)) as client:
        result = client.score(x, [f"r{i}" for i in range(7)], a)
    # requests are pipelined, so they may arrive in any order; the result is reassembled in order
    assert sorted((len(r.reports) for r in svc.requests), reverse=True) == [2, 2, 2, 1]
    assert sorted(rep for r in svc.requests for rep in r.reports) == [f"r{i}" for i in range(7)]
    assert all(r.ByteSize() <= 6 * 1024 for r in svc.requests)
    torch.testing.assert_close(result.total, x.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.anchor.diag_acc, a.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)


def test_server_image_cap_and_client_cap(server):
    svc = ScriptedRewards(max_batch_images=8)
    with RewardClient(server(svc), max_batch_images=3) as client:
        client.score(_images(7), ["r"] * 7, _images(7))
    # requests are pipelined, so they may arrive in any order
    assert sorted(len(r.reports) for r in svc.requests) == [1, 3, 3]
    svc2 = ScriptedRewards(max_batch_images=8)
    with RewardClient(server(svc2)) as client:
        client.score(_images(7), ["r"] * 7, _images(7))
    assert sorted(len(r.reports) for r in svc2.requests) == [3, 4]  # 8 images = 4 pairs


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED],
)
def test_transient_failures_are_retried(server, code):
    svc = ScriptedRewards(fail=2, code=code)
    with RewardClient(server(svc), retries=2, backoff_s=0.01) as client:
        result = client.score(_images(2), ["a", "b"])
    assert len(svc.metadata) == 3 and result.total.shape == (2,)
    assert client.retries_used == 2


def test_retries_are_bounded(server):
    svc = ScriptedRewards(fail=10)
    with (
        RewardClient(server(svc), retries=2, backoff_s=0.01) as client,
        pytest.raises(RewardServiceError) as err,
    ):
        client.score(_images(2), ["a", "b"])
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and len(svc.metadata) == 3


def test_other_errors_are_not_retried(server):
    svc = ScriptedRewards(fail=1, code=grpc.StatusCode.INTERNAL)
    with RewardClient(server(svc), retries=3, backoff_s=0.01) as client, pytest.raises(RewardServiceError):
        client.score(_images(2), ["a", "b"])
    assert len(svc.metadata) == 1


def test_invalid_argument_is_a_value_error_with_the_server_message(server):
    svc = ScriptedRewards()
    with (
        RewardClient(server(svc), weights={"beauty": 1.0}) as client,
        pytest.raises(ValueError, match="unknown"),
    ):
        client.score(_images(2), ["a", "b"])
    assert len(svc.metadata) == 1


def test_deadline_is_applied(server):
    svc = ScriptedRewards()
    svc.sleep_s = 0.5
    with RewardClient(server(svc), timeout_s=0.1, retries=1, backoff_s=0.01) as client:
        with pytest.raises(RewardServiceError) as err:
            client.score(_images(1), ["a"])
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and len(svc.metadata) == 2


def test_client_side_input_checks():
    client = RewardClient("127.0.0.1:1")
    with pytest.raises(ValueError, match="reports"):
        client.score(_images(2), ["only one"])
    with pytest.raises(ValueError, match="anchor"):
        client.score(_images(2), ["a", "b"], _images(3))
    with pytest.raises(ValueError, match="dtype"):
        RewardClient("127.0.0.1:1", dtype="int16")
    client.close()


def test_large_batches_are_pipelined_in_order_and_retried(server):
    svc = ScriptedRewards(fail=1)  # the first in-flight request fails once and is retried
    x, a = _images(40), _images(40).flip(0)
    with RewardClient(server(svc), pipeline=3, backoff_s=0.01) as client:
        result = client.score(x, [f"r{i}" for i in range(40)], a)
    assert sorted(len(r.reports) for r in svc.requests) == [8, 16, 16]
    assert len(svc.metadata) == 4
    torch.testing.assert_close(result.total, x.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.anchor.diag_acc, a.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)


# --- `cxrl score` (cxrl/score_cli.py), the client's command ---------------------------------


def _image_dir(path, images, names):
    path.mkdir()
    for img, name in zip(images, names, strict=True):
        imaging.save_image(img, path / name)
    return path


def test_reports_file_formats(tmp_path):
    from cxrl.score_cli import read_reports

    files = [tmp_path / n for n in ("b.png", "a.png")]
    (tmp_path / "r.txt").write_text("first\n\nsecond\n")
    assert read_reports(tmp_path / "r.txt", files) == ["first", "second"]
    (tmp_path / "r.csv").write_text('file,report,prompt_id\na.png,"A, with comma",1\nb.png,B,2\n')
    assert read_reports(tmp_path / "r.csv", files) == ["B", "A, with comma"]
    (tmp_path / "short.txt").write_text("only one\n")
    with pytest.raises(ValueError, match="1 reports but there are 2 images"):
        read_reports(tmp_path / "short.txt", files)
    (tmp_path / "bad.csv").write_text("name,text\na.png,A\n")
    with pytest.raises(ValueError, match="file,report"):
        read_reports(tmp_path / "bad.csv", files)
    (tmp_path / "missing.csv").write_text("file,report\na.png,A\n")
    with pytest.raises(ValueError, match="no report for 1 image"):
        read_reports(tmp_path / "missing.csv", files)


def test_weights_and_image_checks(tmp_path):
    from cxrl.score_cli import load_images, parse_weights

    assert parse_weights("align=1, diag=10") == {"align": 1.0, "diag": 10.0}
    with pytest.raises(ValueError, match="name=number"):
        parse_weights("align")
    _image_dir(tmp_path / "mixed", [_images(1, 16)[0], _images(1, 24)[0]], ["a.png", "b.png"])
    with pytest.raises(ValueError, match="share one size"):
        load_images(sorted((tmp_path / "mixed").iterdir()))


def test_score_command_prints_a_table_and_writes_json(server, tmp_path, capsys):
    from cxrl.cli import main

    x, a = _images(3, 16), _images(3, 16).flip(0)
    names = ["g0.png", "g1.png", "g2.png"]
    _image_dir(tmp_path / "gen", x, names)
    _image_dir(tmp_path / "anchor", a, names)
    (tmp_path / "reports.txt").write_text("r0\nr1\nr2\n")
    target = server(ScriptedRewards())
    argv = ["score", "--images", str(tmp_path / "gen"), "--reports", str(tmp_path / "reports.txt")]
    argv += [
        "--anchor-images",
        str(tmp_path / "anchor"),
        "--server",
        target,
        "--json",
        str(tmp_path / "o.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "total" in out and "r_align" in out and "anchor diag_acc" in out and "scripted 1" in out
    data = json.loads((tmp_path / "o.json").read_text())
    assert [d["file"] for d in data["images"]] == names and data["comparative"]
    torch.testing.assert_close(
        torch.tensor([d["total"] for d in data["images"]]), x.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0
    )
    (tmp_path / "anchor" / "g2.png").unlink()
    assert main(argv) == 2  # missing anchor: a clear error, exit code 2


def test_score_command_reports_an_unreachable_server(tmp_path):
    from cxrl.cli import main

    _image_dir(tmp_path / "gen", _images(1, 16), ["g.png"])
    (tmp_path / "r.txt").write_text("r\n")
    argv = ["score", "--images", str(tmp_path / "gen"), "--reports", str(tmp_path / "r.txt")]
    argv += ["--server", f"127.0.0.1:{free_port()}", "--timeout", "2"]
    assert main(argv) == 1
