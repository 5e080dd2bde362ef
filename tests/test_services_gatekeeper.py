"""No work before auth: the HTTP ingress refuses a body without the token, or over the limit, before
reading it (services.gatekeeper), measured on the gateway's real FastAPI app under uvicorn in its
own process: 256 MiB bodies, with a length and chunked, and the server's peak memory."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from _payloads import post_raw

from cxrl.infra.ports import free_port
from services.gatekeeper import http_body_limit, is_public

TOKEN = "s3cret-token"
LIMIT = 2 << 20  # the gateway's max_request_bytes here; its HTTP body limit is 4/3 of it + 1 MiB
HUGE = 256 << 20


def _peak_rss(pid: int, reset: bool = False) -> int:
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = dict(os.environ, CXRL_API_TOKEN=TOKEN, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).with_name("_http_gateway.py")), str(port), str(LIMIT)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.5)
    yield proc, port
    proc.terminate()
    proc.wait(30)


def _score_body(n: int) -> dict:
    data = np.random.default_rng(0).integers(0, 256, n * 32 * 32, dtype=np.uint8).tobytes()
    tensor = {"data": base64.b64encode(data).decode(), "shape": [n, 32, 32]}
    return {"images": {"tensor": tensor}, "reports": ["Cardiomegaly."] * n, "weights": {"align": 1.0}}


def test_huge_bodies_are_refused_before_they_are_read(server):
    proc, port = server
    base = _peak_rss(proc.pid, reset=True)
    results = {}
    for name, headers, chunked in [
        ("no token, content-length", {}, False),
        ("no token, chunked", {}, True),
        ("wrong token, chunked", {"authorization": "Bearer nope"}, True),
        ("token, content-length over the limit", {"authorization": f"Bearer {TOKEN}"}, False),
        ("token, chunked over the limit", {"authorization": f"Bearer {TOKEN}"}, True),
    ]:
        status, body, sent = post_raw("127.0.0.1", port, "/v1/score", headers, HUGE, chunked=chunked)
        results[name] = (status, sent)
        detail = json.loads(body)["detail"]
        if "token" in name and "over" in name:
            assert status == 413 and f"limit of {http_body_limit(LIMIT)} bytes" in detail, (name, detail)
        else:
            assert status == 401 and "bearer token" in detail, (name, detail)
    grown = _peak_rss(proc.pid) - base
    print(
        f"\n256 MiB bodies: (status, bytes sent before the answer) {results}; peak RSS +{grown / 2**20:.1f} MiB"
    )
    assert grown < 32 << 20  # reading any one body would take 256 MiB
    limit = http_body_limit(LIMIT)
    assert all(sent <= limit + (16 << 20) for _, sent in results.values())  # socket buffers, not the body


def test_requests_within_the_rules_still_work(server):
    _, port = server
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {TOKEN}"}
    ok = httpx.post(f"{url}/v1/score", json=_score_body(4), headers=auth, timeout=120)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 4, ok.text
    assert httpx.post(f"{url}/v1/score", json=_score_body(4), timeout=60).status_code == 401
    assert httpx.get(f"{url}/v1/info", timeout=60).status_code == 401
    assert (
        httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/openapi.json").status_code == 200
    )
    # a chunked body within the limit is read and scored
    chunks = iter([json.dumps(_score_body(2)).encode()])
    r = httpx.post(f"{url}/v1/score", content=chunks, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_only_docs_and_health_are_public():
    assert (
        is_public("GET", "/docs")
        and is_public("GET", "/posture/openapi.json")
        and is_public("GET", "/healthz")
    )
    assert not is_public("POST", "/docs") and not is_public("GET", "/v1/info")
    assert not is_public("GET", "/posture/v1/info") and not is_public("POST", "/v1/score")
    assert http_body_limit(0) == 0 and http_body_limit(3 << 20) == (4 << 20) + (1 << 20)


def test_docs_load_their_assets_from_the_package_not_a_cdn(server):
    _, port = server
    url = f"http://127.0.0.1:{port}"
    page = httpx.get(f"{url}/docs").text
    assert "cdn" not in page.lower() and "/docs-assets/swagger-ui-bundle.js" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = httpx.get(f"{url}/docs-assets/{asset}")  # public: a browser sends no token
        assert r.status_code == 200 and len(r.content) > 100_000, asset
    assert "/docs-assets/redoc.standalone.js" in httpx.get(f"{url}/redoc").text
