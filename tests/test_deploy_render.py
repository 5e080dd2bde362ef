"""Offline rendering of the kustomize tree in deploy/, and checks on what it renders.

There is no kustomize binary on these machines (nor on PyPI or Debian as a package of
its own), so ``render()`` is a small kustomize for exactly the features deploy/ uses:
``resources`` (files and directories with a kustomization), ``namespace``, ``labels``
(metadata only), ``images`` (every ``containers``/``initContainers`` list, as kustomize's
image transformer does) and ``patches`` given by ``path`` as strategic-merge patches.
Strategic merge follows Kubernetes: maps merge, ``null`` deletes, and lists of built-in
kinds merge by their patch merge key (containers/env/volumes by ``name``, volumeMounts
by ``mountPath``, ports by port number) while lists inside custom resources (RayService)
are replaced whole, since kustomize has no merge keys for them. Anything else in a
kustomization (generators, JSON patches, replacements) is refused with a ValueError,
so deploy/ cannot silently grow beyond what this renderer checks.

With a real kustomize, ``kubectl kustomize deploy/overlays/cpu`` renders the same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
OVERLAYS = ("cpu", "gpu")
SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
# Patch merge keys of list fields in built-in kinds (k8s.io/api `patchMergeKey` tags).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


def load_docs(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def is_custom(obj: dict[str, Any]) -> bool:
    """Custom resources: API groups with a dot that are not Kubernetes' own."""
    group = obj["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports" and items and isinstance(items[0], dict):
        return "containerPort" if "containerPort" in items[0] else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any, *, custom: bool, field: str = "") -> Any:
    """Apply a strategic-merge ``patch`` to ``target``; returns the merged value."""
    if isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise ValueError(f"patch directive {sorted(patch)} is not supported by this renderer")
        if not isinstance(target, dict):
            return copy.deepcopy(patch)
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out.get(key), value, custom=custom, field=key)
        return out
    if isinstance(patch, list):
        key = None if custom else merge_key(field, patch)
        if key is None or not isinstance(target, list):
            return copy.deepcopy(patch)
        out = list(target)
        for item in patch:
            index = next((i for i, old in enumerate(out) if old.get(key) == item[key]), None)
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = strategic_merge(out[index], item, custom=custom, field="")
        return out
    return patch


def set_images(node: Any, images: list[dict[str, str]]) -> None:
    """Kustomize's image transformer: rewrite matching images in containers lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name, _, tag = container["image"].partition(":")
                    for rule in images:
                        if rule["name"] == name:
                            name, tag = rule.get("newName", name), rule.get("newTag", tag)
                            container["image"] = f"{name}:{tag}" if tag else name
            set_images(value, images)
    elif isinstance(node, list):
        for item in node:
            set_images(item, images)


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(hits) != 1:
        raise ValueError(f"expected one {kind}/{name}, found {len(hits)}")
    return hits[0]


def render(directory: Path) -> list[dict[str, Any]]:
    """Build the kustomization in ``directory`` into a list of objects."""
    kust = load_docs(directory / "kustomization.yaml")[0]
    unsupported = set(kust) - SUPPORTED_KEYS
    if unsupported:
        raise ValueError(f"{directory}: kustomization keys {sorted(unsupported)} are not supported")
    objs: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        objs.extend(render(path) if path.is_dir() else load_docs(path))
    for spec in kust.get("patches", []):
        if set(spec) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: FILE` is supported, got {spec}")
        for patch in load_docs(directory / spec["path"]):
            target = find(objs, patch["kind"], patch["metadata"]["name"])
            merged = strategic_merge(target, patch, custom=is_custom(target))
            objs[objs.index(target)] = merged
    for obj in objs:
        if "namespace" in kust and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kust["namespace"]
        for label_set in kust.get("labels", []):
            if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
                raise ValueError("labels with includeSelectors/includeTemplates are not supported")
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    set_images(objs, kust.get("images", []))
    return objs


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec inside a workload or a RayService."""
    if obj["kind"] == "RayService":
        cluster = obj["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [group["template"]["spec"] for group in groups]
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [obj["spec"]["template"]["spec"]]
    return []


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(DEPLOY / "overlays" / request.param)


# --- the renderer itself -------------------------------------------------------------


def test_strategic_merge_merges_built_in_lists_by_key_and_replaces_custom_ones():
    base = {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}]}
    patch = {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}, {"name": "b"}]}
    merged = strategic_merge(base, patch, custom=False)
    assert merged["containers"][0] == {
        "name": "a",
        "image": "x",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    }
    assert merged["containers"][1] == {"name": "b"}
    assert strategic_merge(base, patch, custom=True)["containers"] == patch["containers"]
    assert strategic_merge({"a": 1, "b": 2}, {"b": None}, custom=False) == {"a": 1}
    with pytest.raises(ValueError, match="not supported"):
        strategic_merge(base, {"$patch": "replace"}, custom=False)


def test_image_transformer_rewrites_containers_anywhere():
    obj = {"spec": {"deep": {"template": {"spec": {"containers": [{"image": "cxrl/services:1-cpu"}]}}}}}
    set_images(obj, [{"name": "cxrl/services", "newTag": "1-cuda"}])
    assert obj["spec"]["deep"]["template"]["spec"]["containers"][0]["image"] == "cxrl/services:1-cuda"


def test_render_refuses_kustomize_features_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator: []\n")
    with pytest.raises(ValueError, match="not supported"):
        render(tmp_path)


# --- what deploy/ renders -----------------------------------------------------------


def test_overlays_render_the_whole_stack(overlay):
    name, objs = overlay
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert len(kinds) == len(objs), "duplicate objects"
    for expected in [
        ("Namespace", "cxrl"),
        ("Secret", "cxrl-api-token"),
        ("PersistentVolumeClaim", "cxrl-redis-data"),
        ("Deployment", "cxrl-redis"),
        ("Service", "cxrl-redis"),
        ("RayService", "cxrl-rewards"),
        ("Service", "cxrl-rewards"),
        ("ConfigMap", "cxrl-trainer-config"),
        ("Job", "cxrl-trainer"),
    ]:
        assert expected in kinds, f"{name}: {expected} missing"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "cxrl"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cxrl"


def test_serve_config_v2_is_the_local_serve_config(overlay):
    name, objs = overlay
    rayservice = find(objs, "RayService", "cxrl-rewards")
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    local = yaml.safe_load((REPO / "services" / "configs" / f"serve-{name}.yaml").read_text())
    assert embedded == local, (
        f"deploy/overlays/{name}/serve-config.yaml is stale: run `python deploy/sync_serve_config.py`"
    )


def test_images_follow_the_overlay_variant(overlay):
    name, objs = overlay
    variant = {"cpu": "cpu", "gpu": "cuda"}[name]
    images = [c["image"] for obj in objs for spec in pod_specs(obj) for c in spec["containers"]]
    images += [c["image"] for obj in objs for spec in pod_specs(obj) for c in spec.get("initContainers", [])]
    ours = [image for image in images if image.startswith("cxrl/")]
    assert ours and all(image.endswith(f"-{variant}") for image in ours), ours
    assert all(":" in image and not image.endswith(":latest") for image in images), images


def test_gpu_overlay_has_an_autoscaling_gpu_worker_group():
    objs = render(DEPLOY / "overlays" / "gpu")
    cluster = find(objs, "RayService", "cxrl-rewards")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"], "a group that cannot grow does not autoscale"
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    tolerations = group["template"]["spec"].get("tolerations", [])
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    serve = yaml.safe_load(find(objs, "RayService", "cxrl-rewards")["spec"]["serveConfigV2"])
    gpu_deployments = [
        d
        for app in serve["applications"]
        for d in app.get("deployments", [])
        if d.get("ray_actor_options", {}).get("num_gpus", 0) > 0
    ]
    assert gpu_deployments, "the GPU serve config puts no deployment on a GPU"
    trainer = find(objs, "Job", "cxrl-trainer")["spec"]["template"]["spec"]["containers"][0]
    assert int(trainer["resources"]["limits"]["nvidia.com/gpu"]) == 1


def test_gcs_fault_tolerance_points_at_the_redis_service(overlay):
    _, objs = overlay
    options = find(objs, "RayService", "cxrl-rewards")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    host, _, port = options["redisAddress"].partition(":")
    service = find(objs, "Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    redis = find(objs, "Deployment", "cxrl-redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()


def test_references_resolve_to_rendered_objects(overlay):
    """Secrets, config maps and claims that pods use exist, with the keys they name."""
    _, objs = overlay
    token_users = 0
    for obj in objs:
        for spec in pod_specs(obj):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for container in spec["containers"] + spec.get("initContainers", []):
                for mount in container.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"{obj['metadata']['name']}: no volume {mount['name']}"
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        secret = find(objs, "Secret", ref["name"])
                        assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {})
                        token_users += env["name"] == "CXRL_API_TOKEN"
            for volume in volumes.values():
                if "persistentVolumeClaim" in volume:
                    find(objs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
                if "configMap" in volume:
                    find(objs, "ConfigMap", volume["configMap"]["name"])
    # head, workers, trainer and its wait-for-rewards init container all carry the token
    assert token_users >= 4


def test_reward_service_reaches_the_serve_ports_of_the_ray_pods(overlay):
    _, objs = overlay
    service = find(objs, "Service", "cxrl-rewards")
    rayservice = find(objs, "RayService", "cxrl-rewards")
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    selector = dict(service["spec"]["selector"])
    assert selector.pop("ray.io/serve") == "true"  # set by KubeRay on pods with a ready proxy
    groups = [head] + [g["template"] for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    for template in groups:
        assert selector.items() <= template["metadata"]["labels"].items()
    head_ports = {p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {8000, 9000} <= head_ports
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve.get("grpc_options", {}).get("port", 9000) == 9000
    assert serve.get("http_options", {}).get("port", 8000) == 8000
    assert serve.get("http_options", {}).get("host", "0.0.0.0") == "0.0.0.0"


def test_every_pod_runs_as_non_root(overlay):
    _, objs = overlay
    for obj in objs:
        for spec in pod_specs(obj):
            assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
            for container in spec["containers"] + spec.get("initContainers", []):
                assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_trainer_job_config_is_valid_and_matches_the_cluster(overlay, tmp_path):
    from trainer.config import TrainConfig

    name, objs = overlay
    job = find(objs, "Job", "cxrl-trainer")["spec"]["template"]["spec"]
    (container,) = job["containers"]
    config_path = container["command"][container["command"].index("--config") + 1]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in job["volumes"] if v["name"] == mount["name"])
    data = find(objs, "ConfigMap", volume["configMap"]["name"])["data"]
    (tmp_path / "train.yaml").write_text(data[config_path[len(mount["mountPath"]) + 1 :]])
    config = TrainConfig.from_yaml(tmp_path / "train.yaml")
    host, _, port = config.rewards.url.removeprefix("grpc://").partition(":")
    service = find(objs, "Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env[config.rewards.token_env]["valueFrom"]
    assert config.out_dir in [m["mountPath"] for m in container["volumeMounts"]]
    assert config.rl_config().device == ("cuda" if name == "gpu" else "cpu")
