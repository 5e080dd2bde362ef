"""Serve configs: valid `serve build` documents (Ray's own schema), importable, sized for their targets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve.schema import ServeDeploySchema

from cxrl.infra.ports import free_port
from services.cli import CONFIG_DIR, check_ports_free, grpc_message_limit, load_config
from services.gateway import GatewayArgs
from services.grpc_servicer import SERVICER_FUNCTIONS
from services.models import DEPLOYMENT_NAMES, ModelAppArgs

PROFILES = sorted(CONFIG_DIR.glob("serve-*.yaml"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_both_profiles_exist():
    assert {p.name for p in PROFILES} >= {"serve-cpu.yaml", "serve-gpu.yaml"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_is_a_valid_serve_deploy_config(path):
    schema = ServeDeploySchema.model_validate(_load(path))
    assert [a.name for a in schema.applications] == ["posture", "diagnostic", "consistency", "reward"]
    assert schema.http_options.port == 8000 and schema.grpc_options.port == 9000
    assert list(schema.grpc_options.grpc_servicer_functions) == list(SERVICER_FUNCTIONS)
    for fn in schema.grpc_options.grpc_servicer_functions:
        assert callable(import_attr(fn))
    for app in schema.applications:
        builder = import_attr(app.import_path)
        assert callable(builder)
        if app.name == "reward":
            GatewayArgs(**app.args)
            assert [d.name for d in app.deployments] == ["RewardGateway"]
        else:
            ModelAppArgs(**app.args)
            assert [d.name for d in app.deployments] == [DEPLOYMENT_NAMES[app.name]]


def test_cpu_profile_fits_two_cores_with_fractional_cpus():
    apps = _load(CONFIG_DIR / "serve-cpu.yaml")["applications"]
    deployments = [d for a in apps for d in a["deployments"]]
    cpus = [d["ray_actor_options"]["num_cpus"] for d in deployments]
    assert (
        all(0 < c < 1 for c in cpus) and sum(cpus) * max(d.get("num_replicas", 1) for d in deployments) <= 2
    )
    assert all(not d["ray_actor_options"].get("num_gpus") for d in deployments)


def test_gpu_profile_puts_models_on_gpus_and_autoscales():
    apps = {a["name"]: a for a in _load(CONFIG_DIR / "serve-gpu.yaml")["applications"]}
    for name in DEPLOYMENT_NAMES:
        dep = apps[name]["deployments"][0]
        assert dep["ray_actor_options"]["num_gpus"] > 0 and apps[name]["args"]["device"] == "cuda"
        auto = dep["autoscaling_config"]
        assert 1 <= auto["min_replicas"] < auto["max_replicas"]


def test_load_config_binds_loopback_and_overrides_ports():
    data = load_config(CONFIG_DIR / "serve-cpu.yaml", "127.0.0.1", 18000, 19000)
    assert data["http_options"] == {"host": "127.0.0.1", "port": 18000}
    assert data["grpc_options"]["port"] == 19000
    assert grpc_message_limit(data) == (64 << 20) + (1 << 20)  # the one message limit + framing


def test_busy_port_is_reported_before_starting_ray():
    data = load_config(CONFIG_DIR / "serve-cpu.yaml", "127.0.0.1", free_port(), None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        data["grpc_options"]["port"] = busy.getsockname()[1]
        with pytest.raises(ValueError, match="gRPC port .* is not free.*--grpc-port"):
            check_ports_free(data)
    check_ports_free(data)  # free again


def test_load_config_rejects_invalid_documents(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"applications": [{"name": "x"}]}))
    with pytest.raises(ValueError, match="not a valid serve config"):
        load_config(bad, "127.0.0.1", None, None)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml", "127.0.0.1", None, None)


def test_model_app_args_reject_unknown_keys():
    with pytest.raises(ValueError):
        ModelAppArgs(sorce="random")
