"""A two-node Ray cluster on this machine serving the reward apps, surviving the loss of a node.

What an operator does (docs/deploy.md, "Multi-node Ray"): ``ray start --head`` and
``ray start --address`` on a second node, ``serve deploy`` the Serve config, clients score
over gRPC. Here both nodes run on one machine, each with its own ``--temp-dir``, its own
ports and a custom resource ``slot``; the diagnostic and consistency deployments each
need one ``slot`` (set in ``ray_actor_options.resources``). While a placeholder actor holds
one of the head's two slots, the two apps cannot share the head, so one lands on the
second node. Then the placeholder goes, the second node is killed (its whole process
group: raylet, agents and replica workers, as when a machine dies) and Serve restarts the
lost replica on the head: the gateway answers again, with the same scores as before.

Every process is started by this test in its own session and ended through its process
group id; nothing touches other Ray instances on the machine (no ``ray stop``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))
pytestmark = [pytest.mark.service, pytest.mark.slow, pytest.mark.own_process]  # a Ray driver: own process
_spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
healthcheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(healthcheck)
PINNED_APPS = ("diagnostic", "consistency")
# Each node gets its own loopback address: Ray replaces 127.0.0.1 by the machine's network
# address, and all traffic of this test stays on the loopback interface.
HEAD_IP, NODE2_IP = "127.0.0.2", "127.0.0.3"
REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Cardiomegaly.",
    "Clear lungs.",
]


def free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


TOKEN = "multinode-test-token-0123456789abcdef"  # the reward API's bearer token on both nodes


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CXRL_API_TOKEN=TOKEN,  # set here, whatever an earlier test left in this process's environment
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        # notice a dead node within seconds instead of the default ~30 s
        RAY_health_check_period_ms="1000",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    return env


class Node:
    """``ray start --block`` in its own process group; stop() ends the whole group."""

    def __init__(self, name: str, ip: str, args: list[str], temp_root: Path):
        self.name, self.ip, self.log = name, ip, temp_root / f"{name}.log"
        temp_dir = temp_root / name
        temp_dir.mkdir()
        cmd = [RAY, "start", "--block", f"--node-ip-address={ip}", f"--temp-dir={temp_dir}", *args]
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True
            )

    def stop(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the condition is not met yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def serve_config(path: Path, http_port: int, grpc_port: int) -> None:
    """The CPU Serve config of local runs with random-weight models and the slot pinning."""
    config = yaml.safe_load((REPO / "services" / "configs" / "serve-cpu.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=http_port)
    config["grpc_options"]["port"] = grpc_port
    for app in config["applications"]:
        if app["name"] in ("posture", "diagnostic", "consistency"):
            app["args"].update(source="random", seed=0)
        if app["name"] in PINNED_APPS:
            app["deployments"][0]["ray_actor_options"]["resources"] = {"slot": 1}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def replica_nodes(gcs_address: str) -> dict[str, str]:
    """Application name -> node id of its alive replica actors."""
    from ray.util.state import list_actors

    actors = list_actors(address=gcs_address, filters=[("state", "=", "ALIVE")], limit=1000)
    out = {}
    for actor in actors:
        # Serve replica actors are named SERVE_REPLICA::<app>#<deployment>#<id>
        name = actor.name or ""
        if name.startswith("SERVE_REPLICA::"):
            out[name.split("::", 1)[1].split("#", 1)[0]] = actor.node_id
    return out


def all_running(expected: set[str]) -> bool:
    from ray import serve

    status = serve.status()
    return expected <= set(status.applications) and all(
        status.applications[name].status == "RUNNING" for name in expected
    )


@pytest.fixture
def cluster():
    temp_root = Path(tempfile.mkdtemp(prefix="cxrlmn-", dir="/tmp"))  # short: Ray's socket paths
    gcs, dashboard, client, agent_a, agent_b, metrics_a, metrics_b, *serve_ports = free_ports(9)
    nodes = []
    try:
        head = Node(
            "head",
            HEAD_IP,
            [
                "--head",
                f"--port={gcs}",
                "--num-cpus=2",
                '--resources={"slot": 2}',
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={client}",
                f"--dashboard-agent-listen-port={agent_a}",
                f"--metrics-export-port={metrics_a}",
            ],
            temp_root,
        )
        nodes.append(head)
        wait_for("the head's dashboard", lambda: port_open(dashboard), 180)
        node2 = Node(
            "node2",
            NODE2_IP,
            [
                f"--address={HEAD_IP}:{gcs}",
                "--num-cpus=2",
                '--resources={"slot": 1, "node2": 1}',
                f"--dashboard-agent-listen-port={agent_b}",
                f"--metrics-export-port={metrics_b}",
            ],
            temp_root,
        )
        nodes.append(node2)
        yield {
            "gcs": gcs,
            "dashboard": dashboard,
            "serve_ports": serve_ports,
            "head": head,
            "node2": node2,
            "temp_root": temp_root,
        }
    except Exception:
        for node in nodes:
            print(f"--- {node.name} log ---\n{node.tail()}")
        raise
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            node.stop(signal.SIGTERM)
            node.stop(signal.SIGKILL)
        shutil.rmtree(temp_root, ignore_errors=True)


def test_reward_apps_span_two_nodes_and_survive_losing_one(cluster, monkeypatch):
    monkeypatch.setenv("CXRL_API_TOKEN", TOKEN)  # the health check sends it too
    import ray

    from cxrl.client import RewardClient

    if ray.is_initialized():
        ray.shutdown()
    gcs_address = f"{HEAD_IP}:{cluster['gcs']}"
    ray.init(
        address=gcs_address,
        _node_ip_address=HEAD_IP,
        namespace="serve",
        log_to_driver=False,
    )

    def alive_nodes() -> dict[str, dict]:
        return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}

    nodes = wait_for("two alive nodes", lambda: len(alive_nodes()) == 2 and alive_nodes(), 180)
    node2_id = next(i for i, n in nodes.items() if "node2" in n["Resources"])
    head_id = next(i for i in nodes if i != node2_id)

    # a placeholder holding one of the head's two slots while the apps are placed
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, resources={"slot": 1})
    class Placeholder:
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    placeholder = Placeholder.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)
    ).remote()
    assert ray.get(placeholder.node.remote()) == head_id

    http_port, grpc_port = cluster["serve_ports"]
    config = cluster["temp_root"] / "serve.yaml"
    serve_config(config, http_port, grpc_port)
    deploy = [SERVE, "deploy", str(config), "--address", f"http://127.0.0.1:{cluster['dashboard']}"]
    subprocess.run(deploy, check=True, env=ray_env(), capture_output=True, timeout=300)
    apps = {"posture", "diagnostic", "consistency", "reward"}
    wait_for("every application RUNNING", lambda: all_running(apps), 600, interval=3)

    probe = ["--grpc", f"127.0.0.1:{grpc_port}", "--http", f"http://127.0.0.1:{http_port}"]
    assert healthcheck.main(probe) == 0  # the containers' health check, against the real proxies
    placement = replica_nodes(gcs_address)
    assert set(placement) == apps
    pinned = {placement[app] for app in PINNED_APPS}
    assert pinned == {head_id, node2_id}, "one pinned app must run on each node"
    moved_app = next(app for app in PINNED_APPS if placement[app] == node2_id)

    torch.manual_seed(0)
    images = torch.rand(4, 1, 64, 64)  # [B,1,H,W] in [0,1]
    anchors = torch.rand(4, 1, 64, 64)
    with RewardClient(f"127.0.0.1:{grpc_port}", token=TOKEN, timeout_s=60, retries=2) as client:
        before = client.score(images, REPORTS, anchors)
    assert before.total.shape == (4,) and torch.isfinite(before.total).all()

    ray.kill(placeholder)
    cluster["node2"].stop(signal.SIGKILL)
    wait_for("the cluster to mark node2 dead", lambda: node2_id not in alive_nodes(), 120)

    def scores_again():
        with RewardClient(f"127.0.0.1:{grpc_port}", token=TOKEN, timeout_s=30, retries=0) as client:
            return client.score(images, REPORTS, anchors)

    after = wait_for("the gateway to answer without node2", scores_again, 300, interval=3)
    wait_for("every application RUNNING again", lambda: all_running(apps), 300, interval=3)
    assert healthcheck.main(probe) == 0
    placement = replica_nodes(gcs_address)
    assert set(placement) == apps and set(placement.values()) == {head_id}, placement
    assert placement[moved_app] == head_id
    torch.testing.assert_close(after.total, before.total)  # same seeded models, same scores
    for name in ("diag_acc", "consistency", "r_align"):
        torch.testing.assert_close(getattr(after.policy, name), getattr(before.policy, name))
    print(json.dumps({"moved_app": moved_app, "totals": after.total.tolist()}))
