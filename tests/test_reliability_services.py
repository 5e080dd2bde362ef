"""Reliability of the reward services under hostile input and overload (issue 11), against a real
`cxrl serve` (Ray Serve, CPU profile, random-weight models, gRPC proxy + FastAPI ingress).

- 1,100 seeded malformed requests to each API: every one gets INVALID_ARGUMENT / 422 (never
  UNKNOWN, INTERNAL, 500 or a hang), and the service then scores a valid request correctly;
- floods of more concurrent requests than the gateway takes (max_ongoing_requests 4 +
  max_queued_requests 8 here): the excess gets RESOURCE_EXHAUSTED (gRPC) / 429 with Retry-After
  (HTTP), the rest is scored, and the serve processes' memory stays bounded;
- a reward model replica killed in the middle of a training run: the run completes every epoch,
  the failed call is retried. One `cxrl serve` for the whole module (it takes minutes to start).
The numbers each test measured are printed (run with ``-s``) and quoted in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import signal
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import torch
import yaml
from _hostile import grpc_cases, http_cases
from _serve import find_process, processes_with, random_config, rss_bytes, serve

from cxrl import imaging
from cxrl.client import RewardClient
from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.reward.v1 import reward_pb2_grpc as pb_grpc
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.policy import Policy
from services.cli import CONFIG_DIR
from services.grpc_servicer import parse, transient_status
from trainer.config import TrainConfig
from trainer.runner import build_backend, run_training

N_MALFORMED = 1100  # per API
MAX_REQUEST_BYTES = 2 << 20
MAX_ONGOING, MAX_QUEUED = 4, 8  # the gateway's admission limits in this test
FLOOD = 200  # concurrent requests per flood, far over MAX_ONGOING + MAX_QUEUED
N_FLOODS = 12
REPORTS = ["No acute process.", "Right pleural effusion.", "Cardiomegaly.", "Left pneumothorax."]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-reliability")
    config = random_config(
        root / "serve.yaml",
        gateway_args={"max_request_bytes": MAX_REQUEST_BYTES},
        gateway_deployment={"max_ongoing_requests": MAX_ONGOING, "max_queued_requests": MAX_QUEUED},
    )
    with serve(config, root / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def reference():
    return InProcessRewards(*random_scorers(0))


def _images(b: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return imaging.from_uint8(imaging.to_uint8(torch.rand(b, 1, size, size, generator=g)))  # uint8 grid


def _assert_valid_request_scores_right(service, reference) -> None:
    x, a = _images(4, seed=1), _images(4, seed=2)
    with RewardClient(service.grpc_target, retries=2, timeout_s=300) as client:
        got = client.score(x, REPORTS, a)
    torch.testing.assert_close(got.total, reference.score(x, REPORTS, a).total, atol=1e-5, rtol=0)


def _stubs(channel: grpc.Channel) -> dict[str, grpc.UnaryUnaryMultiCallable]:
    """Per application, its scoring RPC taking request bytes as they are (so garbage can be sent)."""
    out = {
        "reward": channel.unary_unary(
            "/cxrl.reward.v1.RewardService/Score", None, pb.ScoreResponse.FromString
        )
    }
    for model in ("posture", "diagnostic", "consistency"):
        out[model] = channel.unary_unary(
            "/cxrl.reward.v1.ModelService/Predict", None, pb.PredictResponse.FromString
        )
    return out


# --- hostile input ------------------------------------------------------------------------------


@pytest.mark.service
@pytest.mark.slow
def test_malformed_grpc_requests_are_invalid_argument(service, reference):
    cases = grpc_cases(seed=11, n=N_MALFORMED)
    options = [("grpc.max_send_message_length", 64 << 20)]
    statuses, wrong = collections.Counter(), []
    t0 = time.monotonic()
    with grpc.insecure_channel(service.grpc_target, options=options) as channel:
        stubs = _stubs(channel)
        for case in cases:
            data = case.raw if case.message is None else case.message.SerializeToString()
            try:
                stubs[case.application](data, metadata=[("application", case.application)], timeout=60)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            statuses[code.name] += 1
            if code != grpc.StatusCode.INVALID_ARGUMENT or not details:
                wrong.append((case.kind, code.name, details[:200]))
    kinds = collections.Counter(c.kind for c in cases)
    print(f"\ngRPC: {len(cases)} malformed requests in {time.monotonic() - t0:.1f} s: {dict(statuses)}")
    print(f"gRPC kinds ({len(kinds)}): {dict(sorted(kinds.items()))}")
    assert len(kinds) >= 30  # every fault family is represented
    assert not wrong, f"{len(wrong)} requests got the wrong status, e.g. {wrong[:5]}"
    _assert_valid_request_scores_right(service, reference)


@pytest.mark.service
@pytest.mark.slow
def test_malformed_http_requests_are_422(service, reference):
    cases = http_cases(seed=12, n=N_MALFORMED)
    statuses, wrong = collections.Counter(), []
    t0 = time.monotonic()
    with httpx.Client(base_url=service.http_url, timeout=60) as client:
        for case in cases:
            r = client.post(case.path, content=case.body, headers={"content-type": case.content_type})
            statuses[r.status_code] += 1
            want = {422, 413} if case.kind == "score: oversize" else {422}  # 413: body over the limit
            if r.status_code not in want or "detail" not in r.json():
                wrong.append((case.kind, r.status_code, r.text[:200]))
        x = _images(4, seed=3)
        body = {
            "images": {
                "tensor": {"data": base64.b64encode(imaging.to_raw(x)[0]).decode(), "shape": [4, 32, 32]}
            },
            "reports": REPORTS,
        }
        ok = client.post("/v1/score", json=body, timeout=300)
    kinds = collections.Counter(c.kind for c in cases)
    print(f"\nHTTP: {len(cases)} malformed requests in {time.monotonic() - t0:.1f} s: {dict(statuses)}")
    print(f"HTTP kinds ({len(kinds)}): {dict(sorted(kinds.items()))}")
    assert len(kinds) >= 30
    assert not wrong, f"{len(wrong)} requests got the wrong status, e.g. {wrong[:5]}"
    assert ok.status_code == 200, ok.text
    totals = torch.tensor([item["total"] for item in ok.json()["results"]])
    want = InProcessRewards(*random_scorers(0), rlcf=False).score(x, REPORTS).total
    torch.testing.assert_close(totals, want, atol=1e-5, rtol=0)


# --- overload -----------------------------------------------------------------------------------


def _big_request(seed: int = 0) -> pb.ScoreRequest:
    """1 MiB of images (16 x 256 x 256 uint8), posture only so that admitted requests score quickly."""
    data = np.random.default_rng(seed).integers(0, 256, 16 * 256 * 256, dtype=np.uint8).tobytes()
    tensor = pb.Tensor(data=data, shape=[16, 256, 256])
    return pb.ScoreRequest(images=pb.ImageBatch(tensor=tensor), reports=["r"] * 16, weights={"align": 1.0})


def _grpc_flood(stub, request: pb.ScoreRequest, n: int) -> collections.Counter:
    futures = [
        stub.Score.future(request, metadata=[("application", "reward")], timeout=120) for _ in range(n)
    ]
    out = collections.Counter()
    for f in futures:
        try:
            f.result()
            out["OK"] += 1
        except grpc.RpcError as exc:
            out[exc.code().name] += 1
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "backpressure" in exc.details(), exc.details()
    return out


@pytest.mark.service
@pytest.mark.slow
def test_flood_gets_resource_exhausted_and_memory_stays_bounded(service, reference):
    request = _big_request()
    pids = processes_with(service.marker)
    rss0 = rss_bytes(pids)
    options = [("grpc.max_send_message_length", 64 << 20)]
    floods, rss = [], [rss0]
    with grpc.insecure_channel(service.grpc_target, options=options) as channel:
        stub = pb_grpc.RewardServiceStub(channel)
        for _ in range(N_FLOODS):
            floods.append(_grpc_flood(stub, request, FLOOD))
            rss.append(rss_bytes(pids))
    offered = FLOOD * request.ByteSize()  # bytes per flood
    mib = [round(r / 2**20) for r in rss]
    print(f"\ngRPC floods of {FLOOD} x {request.ByteSize() / 2**20:.1f} MiB: {[dict(f) for f in floods]}")
    print(f"serve RSS (MiB) before and after each flood ({len(pids)} processes): {mib}")
    for flood in floods:
        assert set(flood) <= {"OK", "RESOURCE_EXHAUSTED"}, flood  # no timeouts, no errors
        assert flood["RESOURCE_EXHAUSTED"] >= FLOOD // 2 and flood["OK"] >= 1, flood
    assert all(pid in processes_with(service.marker) for pid in pids)  # nothing crashed or restarted
    # Memory grows far slower than the load offered: the proxy's buffers and allocator pools fill
    # during the first floods (each holds FLOOD messages at once), then creep. The second half of
    # the floods (1.2 GiB offered) added 0.08-0.34 of what it offered over five runs (docs/
    # reliability.md), so the bound is half of it; all floods together (2.4 GiB) under half too.
    half = N_FLOODS // 2
    assert rss[-1] - rss[half] < 0.5 * half * offered, mib
    assert rss[-1] - rss0 < 0.5 * N_FLOODS * offered, mib
    _assert_valid_request_scores_right(service, reference)


async def _http_flood(url: str, body: dict, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*[client.post("/v1/score", json=body) for _ in range(n)])


@pytest.mark.service
@pytest.mark.slow
def test_http_flood_gets_429_with_retry_after(service, reference):
    request = _big_request(seed=1)
    tensor = request.images.tensor
    body = {
        "images": {"tensor": {"data": base64.b64encode(tensor.data).decode(), "shape": list(tensor.shape)}},
        "reports": list(request.reports),
        "weights": {"align": 1.0},
    }
    responses = asyncio.run(_http_flood(service.http_url, body, 150))
    statuses = collections.Counter(r.status_code for r in responses)
    print(f"\nHTTP flood of 150 x 1.4 MiB JSON: {dict(statuses)}")
    assert set(statuses) <= {200, 429} and statuses[429] >= 75 and statuses[200] >= 1, statuses
    rejected = [r for r in responses if r.status_code == 429]
    assert all(r.headers.get("retry-after") == "1" and "backpressure" in r.text for r in rejected)
    _assert_valid_request_scores_right(service, reference)


# --- units: the pieces the live tests rely on ---------------------------------------------------


def test_request_bytes_that_are_not_the_message_are_a_value_error():
    request = pb.ScoreRequest(reports=["x"])
    assert parse(pb.ScoreRequest, request.SerializeToString()) == request
    assert parse(pb.ScoreRequest, request) is request
    with pytest.raises(ValueError, match="not a valid cxrl.reward.v1.ScoreRequest"):
        parse(pb.ScoreRequest, b"\x12\xff\xff\xff\x0f")
    with pytest.raises(ValueError, match="expected a cxrl.reward.v1.InfoRequest"):
        parse(pb.InfoRequest, 42)


def test_model_failures_map_to_retryable_statuses():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError, RayServeException

    assert transient_status(BackPressureError(9, 8)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert transient_status(ActorDiedError()) == grpc.StatusCode.UNAVAILABLE
    wrapped = RayServeException("upstream actor died")
    wrapped.__cause__ = ActorDiedError()
    assert transient_status(wrapped) == grpc.StatusCode.UNAVAILABLE
    assert transient_status(RuntimeError("bug")) is None


@pytest.mark.parametrize("profile", ["serve-cpu.yaml", "serve-gpu.yaml"])
def test_shipped_profiles_bound_every_queue(profile):
    apps = yaml.safe_load((CONFIG_DIR / profile).read_text())["applications"]
    for app in apps:
        for d in app["deployments"]:
            assert d["max_queued_requests"] >= d["max_ongoing_requests"] > 0, d["name"]
            assert d["backpressure_config"] == {"status_code": 429, "retry_after_s": 1}, d["name"]


# --- a reward replica killed during training (last: it kills a replica of the shared service) -----
# The trainer runs ``trainer.runner.run_training`` (what `cxrl train` runs) with the gRPC backend
# `cxrl train` builds, on a tiny generator, in a thread of this test. After the first epoch the
# diagnostic model's replica process is frozen (SIGSTOP) until a reward call is stuck in it, then
# killed (SIGKILL). Serve starts a new replica; the stuck call is either re-routed by Serve (the
# frozen replica never accepted it) or fails with UNAVAILABLE and is retried by the client with
# backoff (``test_model_failures_map_to_retryable_statuses``, tests/test_client.py); either way
# the run goes on with no epoch lost, and every epoch's metrics carry its retry count.

EPOCHS = 3
TRAIN = [
    "small left pleural effusion.",
    "no acute cardiopulmonary process.",
    "mild cardiomegaly.",
    "right lower lobe pneumonia.",
]
TEST = [
    "large right pleural effusion.",
    "no acute disease.",
    "cardiomegaly with pulmonary edema.",
    "normal chest.",
]
REPLICA = "ServeReplica:diagnostic:DiagnosticModel"


class CountingBackend:
    """The trainer's reward backend, counting the calls made (so the test knows one is under way)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.cond = threading.Condition()

    def score(self, *args, **kwargs):
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
        return self.inner.score(*args, **kwargs)

    def info(self):
        return self.inner.info()

    def wait_for_call_after(self, n: int, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.calls > n, timeout_s)


def _train_config(tmp_path, target: str) -> TrainConfig:
    return TrainConfig(
        run_name="replica-kill",
        out_dir=str(tmp_path / "runs"),
        preset="cpu-small",
        rl={
            "epochs": EPOCHS,
            "sampling": {"num_steps": 3, "images_per_epoch": 8, "images_per_prompt": 2, "batch_size": 4},
            "train": {"batch_size": 4, "gradient_accumulation_steps": 1},
            "stat_tracker": {"min_count": 2},
        },
        seed_bank=2,
        threads=1,
        progress=False,
        redis={"url": None},
        rewards={"url": f"grpc://{target}", "timeout_s": 120, "retries": 4, "backoff_s": 0.5},
        eval={"prompts": 4, "grid_prompts": 2, "every": 0, "bootstrap": 50},
    )


@pytest.mark.service
@pytest.mark.slow
def test_training_survives_a_killed_reward_replica(service, tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    cfg = _train_config(tmp_path, service.grpc_target)
    rl = cfg.rl_config()
    backend = CountingBackend(build_backend(cfg.rewards, rl.rewards.weights))  # the client `cxrl train` uses
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    outcome: dict = {}

    def train():
        try:
            outcome["result"] = run_training(
                cfg, policy=policy, backend=backend, prompts=(TRAIN, TEST), gen_id="tiny"
            )
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    threads = torch.get_num_threads()
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    history = tmp_path / "runs" / "replica-kill" / "history.jsonl"
    pid = None
    try:
        deadline = time.monotonic() + 600
        while not (history.is_file() and history.read_text().strip()):  # epoch 0 done
            assert thread.is_alive() and time.monotonic() < deadline, outcome.get("error")
            time.sleep(0.2)
        pid = find_process(service.marker, REPLICA)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert backend.wait_for_call_after(backend.calls, timeout_s=300), "no reward call after epoch 0"
        time.sleep(8.0)  # the call reaches the frozen replica and waits there (Serve's health check: 30 s)
        os.kill(pid, signal.SIGKILL)
        killed_after = time.monotonic() - stopped_at
        thread.join(900)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # never leave a frozen replica behind
        torch.set_num_threads(threads)
    assert not thread.is_alive(), "training did not finish"
    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]

    # every epoch trained and logged once, the run evaluated
    assert [m["epoch"] for m in result.history] == list(range(EPOCHS))
    logged = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    assert logged == list(range(EPOCHS))
    assert (result.run_dir / "eval.json").is_file()
    # retries are counted in every epoch's metrics (trainer) and by the client
    client_retries = backend.inner.retries_used
    trainer_retries = sum(m.get("reward_retries", 0) for m in result.history)
    print(
        f"\nreplica {pid} frozen, killed {killed_after:.1f} s later; epochs {logged}; "
        f"client retries {client_retries}, trainer retries {trainer_retries}; "
        f"replacement replica pid {find_process(service.marker, REPLICA)}"
    )
    assert all(isinstance(m["reward_retries"], int) for m in result.history)
    new_pid = find_process(service.marker, REPLICA)
    assert new_pid is not None and new_pid != pid  # Serve replaced the replica
