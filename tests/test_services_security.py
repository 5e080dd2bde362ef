"""Secure by default (issue 20), tried against a real `cxrl serve` (Ray Serve, CPU profile, random
weights, a private Redis) run the way an operator runs it: with CXRL_API_TOKEN and Ray's token auth.

- what listens: every socket of the serve process tree (from /proc) is on loopback, or answers a
  call without a token with UNAUTHENTICATED (the reward API and every Ray port); without tokens
  `cxrl serve` refuses to start;
- decompression bombs and many large images in one request: refused from the headers, the serve
  processes' peak memory does not grow;
- 256 MiB unauthenticated or oversize HTTP bodies through Ray's HTTP proxy: refused unread;
- concurrent good and bad requests: the bad fail alone, the good get the reference scores;
- /docs renders Score, Predict and Info in headless Chromium (assets from the package, no CDN);
- SIGKILL of `cxrl serve` leaves no process behind: no raylet, GCS, worker or redis-server.
The figures each test measured are printed (``-s``) and quoted in docs/security.md.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
import torch
import yaml
from _payloads import png_bomb, post_raw
from _serve import random_config

from cxrl import imaging
from cxrl.client import RewardClient
from cxrl.infra.procs import listening_sockets
from cxrl.infra.serve_process import ServeProcess
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from services.cli import CONFIG_DIR

TOKEN = "test-api-token-0123456789"
LIMIT = 8 << 20  # max_request_bytes of every application here
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPORTS = ["No acute process.", "Right pleural effusion.", "Cardiomegaly.", "Left pneumothorax."]


class SecureServe(ServeProcess):
    """`cxrl serve` with its private Redis (``--local-redis``), so its shutdown covers redis-server."""

    def command(self) -> list[str]:
        return [*super().command(), "--local-redis"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-security")
    env = {"CXRL_API_TOKEN": TOKEN, "RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": None, "REDIS_URL": None}
    config = yaml.safe_load(random_config(root / "serve.yaml").read_text())
    for app in config["applications"]:  # an 8 MiB message limit: the HTTP body limit is 11.7 MiB
        app["args"]["max_request_bytes"] = LIMIT
    (root / "serve.yaml").write_text(yaml.safe_dump(config))
    serve = SecureServe(root / "serve.yaml", root / "serve.log", num_cpus=2, nice=10, env=env)
    with serve:
        yield serve


def _peak_rss(pids: list[int], reset: bool = False) -> int:
    total = 0
    for pid in pids:
        try:
            if reset:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _reference(x: torch.Tensor, reports: list[str]) -> torch.Tensor:
    return InProcessRewards(*random_scorers(0), rlcf=False).score(x, reports).total


def _call(target: str, method: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """One unary call with an empty request; the status it ends with."""
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(method)(b"", timeout=10, metadata=metadata)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


# one method of each of Ray's gRPC services (a server answers UNIMPLEMENTED for another's methods)
RAY_PROBES = (
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "/ray.rpc.NodeManagerService/GetNodeStats",
    "/ray.rpc.CoreWorkerService/GetCoreWorkerStats",
    "/ray.rpc.ObjectManagerService/Push",
    "/ray.serve.ASGIService/HandleRequest",  # a Serve replica's inter-deployment server
    "/ray.rpc.ReporterService/GetTraceback",  # the dashboard agent (would run py-spy)
    "/ray.rpc.LogService/ListLogs",
)


def _probe(address: str, port: int, reward_port: int) -> str:
    """What a caller without any token gets from ``port``: a gRPC status, or an HTTP status."""
    host = "127.0.0.1" if address in ("::", "0.0.0.0") else address
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if port == reward_port:  # the reward API: our bearer token
        return _call(target, "/cxrl.reward.v1.RewardService/Info", [("application", "reward")]).name
    for method in RAY_PROBES:  # Ray's own servers: Ray's token
        code = _call(target, method, [])
        if code != grpc.StatusCode.UNIMPLEMENTED:
            break
    if code != grpc.StatusCode.UNAVAILABLE:
        return code.name
    try:  # not gRPC: an HTTP server (Ray's agents); submit a job through it, read its metrics
        submit = httpx.post(f"http://{target}/api/job_agent/jobs/", json={}, timeout=10).status_code
        metrics = httpx.get(f"http://{target}/metrics", timeout=10).status_code
        return f"HTTP {submit}" if submit == metrics else f"HTTP {submit} (job) {metrics} (metrics)"
    except httpx.HTTPError as exc:
        return f"no HTTP either: {type(exc).__name__}"


def test_serve_refuses_to_listen_beyond_loopback_without_tokens(tmp_path):
    cmd = [sys.executable, "-m", "cxrl.cli", "serve", "--config", str(CONFIG_DIR / "serve-cpu.yaml")]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CXRL_", "RAY_AUTH"))}
    cases = {
        "no API token": (base, "CXRL_API_TOKEN"),
        "Ray auth disabled": (
            {**base, "CXRL_API_TOKEN": TOKEN, "RAY_AUTH_MODE": "disabled"},
            "RAY_AUTH_MODE",
        ),
    }
    for name, (env, needle) in cases.items():
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "refuses to start" in out.stderr and needle in out.stderr, (
            name,
            out.stderr,
        )
        assert "[::]" in out.stderr or "every interface" in out.stderr


@pytest.mark.service
@pytest.mark.slow
def _get_metrics(address: str, port: int) -> str:
    """``GET /metrics`` over plain HTTP without a token: the status, or why there was none."""
    host = "127.0.0.1" if address in ("::", "0.0.0.0") else address
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return f"HTTP {httpx.get(f'http://{target}/metrics', timeout=10).status_code}"
    except httpx.HTTPError as exc:  # a gRPC server answers HTTP/1.1 with a protocol error
        return f"no HTTP: {type(exc).__name__}"


def test_every_listener_beyond_loopback_demands_a_token(service):
    listeners = listening_sockets(service.processes())
    http_port = int(service.http_url.rsplit(":", 1)[1])
    assert [x.address for x in listeners if x.port == http_port] == ["127.0.0.1"]
    beyond = sorted({x.port for x in listeners if not x.loopback})
    owner = {
        x.port: Path(f"/proc/{x.pid}/cmdline").read_bytes().split(b"\0")[0][-40:].decode() for x in listeners
    }
    address = {x.port: x.address for x in listeners}
    statuses = {p: (owner[p], address[p], _probe(address[p], p, service.grpc_port)) for p in beyond}
    print(f"\n{len(listeners)} listening sockets, {len(beyond)} ports beyond loopback: {statuses}")
    assert service.grpc_port in beyond and len(beyond) >= 3
    refused = {"UNAUTHENTICATED", "HTTP 401", "HTTP 403"}
    assert all(status in refused for *_, status in statuses.values()), statuses
    # no metrics beyond loopback: GET /metrics on every such port gets no 200 (Ray's exporter, the
    # dashboard's and the autoscaler's /metrics answered anyone on 0.0.0.0 before cxrl serve made
    # the node address 127.0.0.1)
    metrics = {p: _get_metrics(address[p], p) for p in beyond}
    print(f"GET /metrics beyond loopback: {metrics}")
    assert not [s for s in metrics.values() if s.startswith("HTTP 2")], metrics
    # ... while the exporter answers on loopback, and only there
    exporter = [x for x in listeners if x.port == service.metrics_port]
    assert [x.address for x in exporter] == ["127.0.0.1"], exporter
    assert httpx.get(service.metrics_url, timeout=10).status_code == 200
    with RewardClient(service.grpc_target, token=TOKEN) as client:  # with the token: served
        assert len(client.info()) == 3


def _encoded_request(blobs: list[bytes], reports: list[str]) -> pb.ScoreRequest:
    return pb.ScoreRequest(images=pb.ImageBatch(encoded=pb.EncodedImages(images=blobs)), reports=reports)


@pytest.mark.service
@pytest.mark.slow
def test_decompression_bombs_are_refused_and_memory_stays_flat(service):
    pids = service.processes()
    base = _peak_rss(pids, reset=True)
    md = [("application", "reward"), ("authorization", f"Bearer {TOKEN}")]
    cases = {
        "13000x13000 PNG (169 Mpx, 164 kB)": _encoded_request([png_bomb(13000, 13000)], ["r"]),
        "10000x10000 PNG (100 Mpx)": _encoded_request([png_bomb(10000, 10000)], ["r"]),
        "512 valid 2048x2048 PNGs (2.1 Gpx, 8 GiB as float)": _encoded_request(
            [png_bomb(2048, 2048)] * 512, ["r"] * 512
        ),
    }
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(service.grpc_target, options=options) as channel:
        score = channel.unary_unary("/cxrl.reward.v1.RewardService/Score", pb.ScoreRequest.SerializeToString)
        details = {}
        for name, request in cases.items():
            with pytest.raises(grpc.RpcError) as err:
                score(request, timeout=120, metadata=md)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.value.details())
            details[name] = err.value.details()
    grown = _peak_rss(pids) - base
    print(f"\nbombs refused: {details}\npeak RSS of {len(pids)} serve processes: +{grown / 2**20:.1f} MiB")
    assert "169000000 pixels, over the limit" in details["13000x13000 PNG (169 Mpx, 164 kB)"]
    assert "decode to 2147483648 pixels" in details["512 valid 2048x2048 PNGs (2.1 Gpx, 8 GiB as float)"]
    assert grown < 64 << 20  # decoding the first bomb alone would take 169 MB (676 MB as float32)


@pytest.mark.service
@pytest.mark.slow
def test_huge_http_bodies_are_refused_unread_through_rays_proxy(service):
    pids = service.processes()
    base = _peak_rss(pids, reset=True)
    port = int(service.http_url.rsplit(":", 1)[1])
    auth = {"authorization": f"Bearer {TOKEN}"}
    results = {}
    for name, headers, chunked, want in [
        ("no token, content-length", {}, False, 401),
        ("no token, chunked", {}, True, 401),
        ("token, content-length over the limit", auth, False, 413),
        ("token, chunked over the limit", auth, True, 413),
    ]:
        status, body, sent = post_raw("127.0.0.1", port, "/v1/score", headers, 256 << 20, chunked=chunked)
        results[name] = (status, sent)
        assert status == want, (name, status, body[:300])
    grown = _peak_rss(pids) - base
    print(
        f"\n256 MiB bodies via Ray's proxy: {results}; peak RSS of the serve processes +{grown / 2**20:.1f} MiB"
    )
    assert grown < 64 << 20  # one 256 MiB body held anywhere would be 256 MiB


@pytest.mark.service
@pytest.mark.slow
def test_bad_requests_fail_alone_among_concurrent_good_ones(service):
    x = imaging.from_uint8(
        imaging.to_uint8(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)))
    )
    want = _reference(x, REPORTS)
    bad_reports = [REPORTS[:3] + ["   "], REPORTS[:3] + ["x" * 9000]]  # empty / over the length limit

    def call(i: int):
        with RewardClient(service.grpc_target, token=TOKEN, retries=0) as client:
            try:
                return client.score(x, REPORTS if i % 2 == 0 else bad_reports[i // 2 % 2]).total
            except ValueError as exc:
                return exc

    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(call, range(16)))
    kinds = collections.Counter("ok" if isinstance(o, torch.Tensor) else "invalid" for o in out)
    print(f"\n16 concurrent requests, 8 bad: {dict(kinds)}")
    for i, o in enumerate(out):
        if i % 2 == 0:
            torch.testing.assert_close(o, want, atol=1e-5, rtol=0)
        else:
            assert isinstance(o, ValueError) and ("non-empty" in str(o) or "characters" in str(o)), o


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()[-40:]
    except OSError:
        return "gone"


def _dom(url: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    cmd += ["--virtual-time-budget=20000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.service
@pytest.mark.slow
def test_docs_render_score_predict_and_info_in_headless_chromium(service):
    assert Path(CHROMIUM).exists(), "headless Chromium is missing: run `make browser`"
    gateway, posture = _dom(f"{service.http_url}/docs"), _dom(f"{service.http_url}/posture/docs")
    for dom, ops in ((gateway, ("/v1/score", "/v1/info")), (posture, ("/v1/predict", "/v1/info"))):
        paths = re.findall(r'data-path="([^"]*)"', dom)
        print(f"\nrendered operations: {paths}")
        assert "swagger-ui" in dom and "opblock-summary-path" in dom, dom[-2000:]
        for op in ops:
            assert any(p.endswith(op) for p in paths), (op, paths)
    assert "Score" in gateway and "Info" in gateway and "Predict" in posture
    assert "cdn" not in gateway.lower()


@pytest.mark.service
@pytest.mark.slow
def test_sigkill_of_serve_leaves_no_process_behind(service):
    """Last in this module: it kills the service."""
    pids = service.processes()
    names = collections.Counter(_name(p) for p in pids)
    redis_port = int(re.search(r"private Redis at redis://127.0.0.1:(\d+)", service.log_text()).group(1))
    everyone = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    redis = [x.pid for x in listening_sockets(everyone) if x.port == redis_port]  # its environ is rewritten
    assert len(redis) == 1 and any("raylet" in n for n in names), (redis, names)
    t0 = time.monotonic()
    os.kill(service.proc.pid, signal.SIGKILL)
    while (left := service.processes()) and time.monotonic() - t0 < 60:
        time.sleep(0.5)
    print(
        f"\nSIGKILL of cxrl serve: {len(pids)} processes {dict(names)} gone in {time.monotonic() - t0:.1f} s"
    )
    assert not left, [_name(p) for p in left]
    assert (
        not Path(f"/proc/{redis[0]}").exists()
        or "Z" in Path(f"/proc/{redis[0]}/stat").read_text().split(")")[-1][:3]
    )
