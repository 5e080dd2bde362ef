"""docker-compose.yml: valid against the Compose Specification schema, and wired as documented.

The schema is the Compose Specification's own JSON Schema, vendored in tests/schemas/
(see its README). Compose interpolates ``${VAR:-default}`` before it validates, so the
test does the same with an empty environment (the defaults a fresh clone gets).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
CPU_PAIR, GPU_PAIR = ("rewards", "trainer"), ("rewards-gpu", "trainer-gpu")


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, $$."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op.endswith("?"):
                raise ValueError(f"required variable {name} is unset: {arg}")
            return arg
        return value or ""

    return VARIABLE.sub(substitute, node.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with open(REPO / "docker-compose.yml") as fh:
        return interpolate(yaml.safe_load(fh), env={})


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(doc)


def test_compose_file_is_valid_against_the_compose_specification(compose):
    validate(compose)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: d["services"]["rewards"].update(helthcheck={}),  # misspelt key
        lambda d: d["services"]["trainer"]["depends_on"]["rewards"].update(condition="healthy"),
        lambda d: d["services"]["rewards-gpu"]["deploy"]["resources"]["reservations"]["devices"][0].pop(
            "capabilities"
        ),
    ],
)
def test_schema_rejects_broken_variants(compose, corrupt):
    """The validation above is not vacuous: the same file with one mistake fails it."""
    broken = copy.deepcopy(compose)
    corrupt(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_interpolation_follows_compose_rules():
    assert interpolate("${A:-x}/${B-y}/${C}/$$D", {"A": "", "B": ""}) == "x//" + "/$D"
    with pytest.raises(ValueError, match="required"):
        interpolate("${A:?set A}", {})


def test_trainer_starts_after_healthy_services(compose):
    services = compose["services"]
    for rewards, trainer in (CPU_PAIR, GPU_PAIR):
        depends = services[trainer]["depends_on"]
        assert depends[rewards]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert services[rewards]["depends_on"]["redis"]["condition"] == "service_healthy"
        check = " ".join(services[rewards]["healthcheck"]["test"])
        assert "--grpc 127.0.0.1:9000" in check and "--http http://127.0.0.1:8000" in check
        address = services[trainer]["environment"]["CXRL_REWARD_ADDRESS"]
        assert address == f"grpc://{rewards}:9000", "the trainer must score on its own pair's services"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_volumes_for_redis_runs_and_models(compose):
    services = compose["services"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "redis-data" in compose["volumes"]
    for name in ("trainer", "trainer-gpu"):
        targets = {v.split(":")[1] for v in services[name]["volumes"]}
        assert {"/app/runs", "/models", "/config"} <= targets
    for name in ("rewards", "rewards-gpu"):
        assert any(v.endswith(":/models:ro") for v in services[name]["volumes"])


def test_gpu_profile_reserves_nvidia_devices(compose):
    services = compose["services"]
    for name, service in services.items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if name in GPU_PAIR:
            assert service["profiles"] == ["gpu"]
            assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
            assert service["build"]["args"]["VARIANT"] == "cuda"
        else:
            assert "profiles" not in service, f"{name} must start with a plain `docker compose up`"
            assert not devices
    assert services["rewards-gpu"]["command"][3] == "services/configs/serve-gpu.yaml"
    assert services["rewards"]["command"][3] == "services/configs/serve-cpu.yaml"


def test_ports_publish_on_loopback_only(compose):
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    for name in ("rewards", "rewards-gpu"):
        command = compose["services"][name]["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0", "inside the container, bind all interfaces"


def test_files_the_stack_names_exist(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        command = service.get("command", [])
        if "--config" in command:
            config = command[command.index("--config") + 1]
            if not config.startswith("/"):
                assert (REPO / config).is_file(), f"{name}: {config} missing"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy/"):
                assert (REPO / source).exists(), f"{name}: mounted {source} missing"


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repo file that a bind mount of ``service`` shows at ``container_path``."""
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if container_path.startswith(target.rstrip("/") + "/") and source.startswith("./"):
            return REPO / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not bind-mounted from the repo")


@pytest.mark.parametrize("name", ["trainer", "trainer-gpu"])
def test_trainer_configs_are_valid_and_score_over_grpc(compose, name):
    from trainer.config import TrainConfig

    service = compose["services"][name]
    command = service["command"]
    config = TrainConfig.from_yaml(host_path(service, command[command.index("--config") + 1]))
    rewards = "rewards-gpu" if name == "trainer-gpu" else "rewards"
    assert config.rewards.url == f"grpc://{rewards}:9000"
    assert config.rewards.token_env == "CXRL_API_TOKEN"
    assert config.out_dir == "/app/runs"
    assert config.rl_config().device == ("cuda" if name == "trainer-gpu" else "cpu")
