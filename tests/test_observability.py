"""Metrics against the real thing: a live `cxrl serve` and a tiny training run, scraped by a real
Prometheus (Debian's package; `make prometheus` installs it) on loopback, queried with PromQL.

- the services: after N scored and M refused requests (by reason), ``increase(...)`` over the window
  of the load gives N and M; the gateway's latency histogram gives a finite p95; the metrics carry
  neither the token nor report text;
- the trainer: Prometheus scrapes ``/metrics`` of a run while it trains, and the last scraped epoch
  metrics are those of ``history.jsonl``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
import torch
import yaml
from _payloads import png_bomb
from _serve import random_config
from prometheus_client.parser import text_string_to_metric_families

from cxrl.client import RewardClient
from cxrl.infra.ports import free_port
from cxrl.infra.serve_process import ServeProcess
from cxrl.reward.v1 import reward_pb2 as pb
from trainer.metrics import PrometheusSink

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TOKEN = "observability-test-token-0123456789"
REPORT = "Small right pleural effusion, no pneumothorax."


class Prometheus:
    """A real Prometheus on a loopback port scraping ``targets`` (job -> host:port) every second."""

    def __init__(self, root: Path, targets: dict[str, str]):
        assert Path(PROMETHEUS).exists(), "Prometheus is missing: run `make prometheus` (Debian's package)"
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "prometheus.log", "w")  # noqa: SIM115 (closed in stop)
        cmd = [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}"]
        cmd += [f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                root / "prometheus.log"
            ).read_text()
            time.sleep(0.5)

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str, at: float | None = None) -> float | None:
        result = self.query(promql, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def by(self, label: str, promql: str, at: float | None = None) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql, at)}

    def wait_for(self, promql: str, want: float, timeout_s: float = 90) -> float:
        """Poll until ``promql`` (one number) equals ``want``; returns the time it did."""
        deadline = time.monotonic() + timeout_s
        while (got := self.value(promql)) != want:
            assert time.monotonic() < deadline, f"{promql} = {got}, waited for {want}"
            time.sleep(1)
        return time.time()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


# -- the trainer's /metrics (no Prometheus needed) ------------------------------------------------


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_trainer_sink_serves_every_epoch_metric_on_loopback():
    sink = PrometheusSink("run-1", port=0)
    try:
        assert sink.server.server_address[0] == "127.0.0.1"
        sink.epoch({"epoch": 2, "policy/total": 0.25, "anchor/total": -0.5, "approx_kl": 1e-3, "note": "x"})
        got = _scrape(sink.url)
        metric = "cxrl_trainer_epoch_metric"
        assert got[(metric, (("metric", "policy/total"), ("run", "run-1")))] == 0.25
        assert got[(metric, (("metric", "anchor/total"), ("run", "run-1")))] == -0.5
        assert got[(metric, (("metric", "approx_kl"), ("run", "run-1")))] == 1e-3
        assert not any(dict(labels).get("metric") == "note" for _, labels in got)  # numbers only
        assert got[("cxrl_trainer_epochs_completed", (("run", "run-1"),))] == 3
        assert got[("cxrl_trainer_nonfinite_metrics", (("run", "run-1"),))] == 0
        assert abs(got[("cxrl_trainer_last_epoch_timestamp_seconds", (("run", "run-1"),))] - time.time()) < 60
        sink.epoch({"epoch": 3, "policy/total": float("nan"), "loss": float("inf")})
        got = _scrape(sink.url)
        assert got[("cxrl_trainer_nonfinite_metrics", (("run", "run-1"),))] == 2
        assert math.isnan(got[(metric, (("metric", "policy/total"), ("run", "run-1")))])
    finally:
        sink.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(sink.url, timeout=2)


# -- a live `cxrl serve` scraped by Prometheus ----------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-observability")
    config = random_config(root / "serve.yaml", gateway_args={"max_request_bytes": 1 << 20})
    env = {
        "CXRL_API_TOKEN": TOKEN,
        "RAY_AUTH_MODE": None,
        "RAY_AUTH_TOKEN": None,
        "REDIS_URL": None,
        "RAY_metrics_report_interval_ms": "1000",  # workers -> exporter every second (default 10 s)
    }
    with ServeProcess(config, root / "serve.log", num_cpus=2, nice=10, env=env) as serve:
        yield serve


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _refusals(target: str) -> dict[str, list[tuple[pb.ScoreRequest, str]]]:
    """Requests the gateway refuses, by the reason it should give (request, token)."""
    big = pb.ImageBatch(
        tensor=pb.Tensor(data=bytes(6 * 512 * 512), shape=[6, 1, 512, 512], dtype=pb.DTYPE_UINT8)
    )
    small = pb.ImageBatch(
        tensor=pb.Tensor(data=bytes(4 * 32 * 32), shape=[4, 1, 32, 32], dtype=pb.DTYPE_UINT8)
    )
    bomb = pb.ImageBatch(encoded=pb.EncodedImages(images=[png_bomb(13000, 13000)]))
    return {
        "auth": [(pb.ScoreRequest(images=small, reports=[REPORT] * 4), "wrong-token")] * 2,
        "size": [(pb.ScoreRequest(images=big, reports=[REPORT] * 6), TOKEN)],
        "pixels": [(pb.ScoreRequest(images=bomb, reports=[REPORT]), TOKEN)] * 2,
        "report": [(pb.ScoreRequest(images=small, reports=[REPORT, REPORT, "  ", REPORT]), TOKEN)] * 3,
    }


def _send(target: str, request: pb.ScoreRequest, token: str) -> grpc.StatusCode:
    options = [("grpc.max_send_message_length", 8 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        score = channel.unary_unary("/cxrl.reward.v1.RewardService/Score", pb.ScoreRequest.SerializeToString)
        try:
            score(
                request,
                timeout=60,
                metadata=[("application", "reward"), ("authorization", f"Bearer {token}")],
            )
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


@pytest.mark.service
@pytest.mark.slow
def test_prometheus_counts_scored_and_refused_requests_and_a_p95(service, tmp_path):
    prom = Prometheus(tmp_path / "prom", {"cxrl-rewards": f"127.0.0.1:{service.metrics_port}"})
    try:
        requests = 'sum(ray_cxrl_reward_requests_total{application="reward",method="Score",status="ok"})'
        refused = 'sum(ray_cxrl_reward_refused_requests_total{application="reward",method="Score"})'
        # one of each first, so every series exists before the window (increase() needs a first sample)
        with RewardClient(service.grpc_target, token=TOKEN) as client:
            client.score(_images(), [REPORT] * 4)
        cases = _refusals(service.grpc_target)
        for reason, items in cases.items():
            assert _send(service.grpc_target, *items[0]) != grpc.StatusCode.OK, reason
        t0 = prom.wait_for(requests, 1)
        prom.wait_for(refused, len(cases))
        time.sleep(20)
        n_scored = 5
        with RewardClient(service.grpc_target, token=TOKEN) as client:
            for i in range(n_scored):
                client.score(_images(seed=i + 1), [REPORT] * 4)
        codes = {
            reason: [_send(service.grpc_target, *item) for item in items] for reason, items in cases.items()
        }
        assert {r: {c.name for c in cs} for r, cs in codes.items()} == {
            "auth": {"UNAUTHENTICATED"},
            "size": {"INVALID_ARGUMENT"},
            "pixels": {"INVALID_ARGUMENT"},
            "report": {"INVALID_ARGUMENT"},
        }
        prom.wait_for(requests, 1 + n_scored)
        prom.wait_for(refused, len(cases) + sum(len(v) for v in cases.values()))
        # increase() extrapolates a range's first and last samples to its ends (1 s scrapes: by up
        # to 1.1 s); over a window of 60 s or more that is under 2 %, so round() gives the count
        time.sleep(max(5.0, 65 - (time.time() - t0)))
        t1 = time.time() - 1
        window = f"[{int(t1 - t0) - 2}s]"
        scored = prom.value(
            f"round(sum(increase(ray_cxrl_reward_requests_total{{application='reward',method='Score',status='ok'}}{window})))",
            t1,
        )
        by_reason = prom.by(
            "reason",
            f"round(sum by (reason) (increase(ray_cxrl_reward_refused_requests_total{{application='reward',method='Score'}}{window})))",
            t1,
        )
        images = prom.by(
            "model", f"round(sum by (model) (increase(ray_cxrl_reward_images_scored_total{window})))", t1
        )
        p95 = prom.value(
            "histogram_quantile(0.95, sum by (le) (rate(ray_cxrl_reward_request_duration_seconds_bucket"
            f"{{application='reward',method='Score',protocol='grpc'}}{window})))",
            t1,
        )
        model_p95 = prom.by(
            "model",
            "histogram_quantile(0.95, sum by (le, model) (rate(ray_cxrl_reward_model_duration_seconds_bucket"
            f"{window})))",
            t1,
        )
        replicas = prom.by(  # the gauge's series comes and goes between exports: the window's maximum
            "application",
            f"sum by (application) (max_over_time(ray_serve_deployment_replica_healthy{window}))",
            t1,
        )
        print(
            f"\nPromQL over {window}: scored {scored}, refused {by_reason}, images {images}, "
            f"gateway p95 {p95:.3f} s, model p95 {model_p95}, healthy replicas {replicas}"
        )
        assert scored == n_scored
        assert by_reason == {reason: len(items) for reason, items in cases.items()}
        assert images == {"posture": 4 * n_scored, "diagnostic": 4 * n_scored, "consistency": 4 * n_scored}
        assert math.isfinite(p95) and 0 < p95 < 240
        assert set(model_p95) == {"posture", "diagnostic", "consistency"}
        assert all(math.isfinite(v) and v > 0 for v in model_p95.values())
        assert replicas.get("reward") == 1 and all(v == 1 for v in replicas.values()), replicas
        text = httpx.get(service.metrics_url, timeout=10).text
        assert TOKEN not in text and REPORT not in text and "wrong-token" not in text
    finally:
        prom.stop()


# -- the trainer scraped while it trains ----------------------------------------------------------


@pytest.mark.slow
def test_prometheus_scrapes_the_trainer_during_a_run(tmp_path, one_thread):
    from test_trainer_runner import TEST, TRAIN, _config, _objects

    from trainer.runner import run_training

    port = free_port()
    base = _config(tmp_path, epochs=4)
    cfg = type(base).model_validate({**base.model_dump(), "metrics": {"port": port}})
    prom = Prometheus(tmp_path / "prom", {"cxrl-trainer": f"127.0.0.1:{port}"})
    try:
        policy, backend = _objects(cfg)
        seen: list[float] = []
        done = threading.Event()

        def watch():  # what Prometheus has while the run goes on
            while not done.is_set():
                v = prom.value('max(cxrl_trainer_epochs_completed{run="tiny"})')
                if v is not None:
                    seen.append(v)
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = run_training(cfg, policy=policy, backend=backend, prompts=(TRAIN, TEST), gen_id="tiny")
        done.set()
        watcher.join()
        history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
        last = prom.value('last_over_time(cxrl_trainer_epochs_completed{run="tiny"}[5m])')
        print(f"\nepochs completed as Prometheus saw them during the run: {sorted(set(seen))}; last {last}")
        assert seen and last is not None and 1 <= last <= len(history)
        epoch = history[int(last) - 1]
        for key in ("policy/total", "anchor/total", "loss", "approx_kl", "clipfrac", "time/epoch"):
            if key not in epoch:
                continue
            got = prom.value(f'last_over_time(cxrl_trainer_epoch_metric{{run="tiny",metric="{key}"}}[5m])')
            assert got == pytest.approx(float(epoch[key]), rel=1e-9, abs=1e-12), key
        assert "policy/total" in epoch
    finally:
        prom.stop()
