"""Schema validation of what deploy/ renders, offline.

- The RayService and the RayJob against KubeRay's CRDs (tests/schemas/kuberay-ray.io_*.yaml):
  jsonschema over the CRD version's ``openAPIV3Schema``, made strict the way
  ``kubectl apply`` (server-side field validation ``Strict``) treats CRDs: an unknown
  field is an error, not silently pruned.
- The PodMonitor of deploy/monitoring against the prometheus-operator's CRD
  (tests/schemas/prometheus-operator-*.yaml), the same way, and against the pods it selects.
- Kubernetes' own kinds against the strict JSON schemas that the ``kubernetes-validate``
  wheel carries for each Kubernetes release (no network).
- ``serveConfigV2`` through Ray Serve's own ``ServeDeploySchema``, plus a strict-keys walk
  over the same pydantic models (Ray's schema ignores unknown keys, so a misspelt
  ``num_replica`` would otherwise pass), and every import path it names must import.
"""

from __future__ import annotations

import copy
import functools
import importlib
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
import pydantic
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from test_deploy_render import OVERLAYS, find, render_overlay

REPO = Path(__file__).resolve().parents[1]
CRD_FILES = {
    "RayService": REPO / "tests" / "schemas" / "kuberay-ray.io_rayservices.yaml",
    "RayJob": REPO / "tests" / "schemas" / "kuberay-ray.io_rayjobs.yaml",
    "PodMonitor": REPO / "tests" / "schemas" / "prometheus-operator-monitoring.coreos.com_podmonitors.yaml",
}
PODMONITOR = REPO / "deploy" / "monitoring" / "podmonitor.yaml"
K8S_VERSIONS = ("1.29", "1.37")  # oldest and newest Kubernetes release we claim


def strict(schema: Any) -> Any:
    """Copy of an OpenAPI v3 structural schema where objects reject unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    # a CRD is 1 MB of YAML: parse it once, with libyaml when PyYAML has it
    crd = yaml.load(CRD_FILES[kind].read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    group, _, version = api_version.rpartition("/")
    assert group == crd["spec"]["group"], f"{api_version} is not in the CRD's group {crd['spec']['group']}"
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{api_version} {kind} is not served by the vendored CRD"
    return jsonschema.Draft7Validator(strict(entry["schema"]["openAPIV3Schema"]))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator(obj["kind"], obj["apiVersion"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def unknown_keys(model: type[pydantic.BaseModel], data: Any, path: str = "") -> list[str]:
    """Keys of ``data`` that ``model`` (recursively, through its field types) does not define."""
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = {name: field for name, field in fields.items()}
    names.update({field.alias: field for field in fields.values() if field.alias})
    found = []
    for key, value in data.items():
        if key not in names:
            found.append(f"{path}{key}")
            continue
        for sub in nested_models(names[key].annotation):
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                suffix = f"[{i}]" if isinstance(value, list) else ""
                found += unknown_keys(sub, item, f"{path}{key}{suffix}.")
    return found


def nested_models(annotation: Any) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.List):  # noqa: UP006
        return [m for arg in typing.get_args(annotation) for m in nested_models(arg)]
    return []


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict[str, Any]]:
    return render_overlay(request.param)


# --- RayService against the KubeRay CRD ---------------------------------------------


def test_rayservice_is_valid_against_the_kuberay_crd(rendered):
    rayservice = find(rendered, "RayService", "cxrl-rewards")
    assert crd_errors(rayservice) == []
    options = rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"], "GCS fault tolerance needs the Redis address"


def test_rayjob_is_valid_against_the_kuberay_crd():
    rayjob = find(render_overlay("gpu-multinode"), "RayJob", "cxrl-trainer")
    assert crd_errors(rayjob) == []


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (lambda s: s.update(entryPoint="cxrl train"), "entryPoint"),
        (lambda s: s["rayClusterSpec"]["authOptions"].update(mode="password"), "mode"),
        (lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="4"), "replicas"),
        (lambda s: s.update(shutdownAfterJobFinishes="yes"), "shutdownAfterJobFinishes"),
    ],
)
def test_rayjob_crd_validation_catches_mistakes(corrupt, field):
    rayjob = copy.deepcopy(find(render_overlay("gpu-multinode"), "RayJob", "cxrl-trainer"))
    corrupt(rayjob["spec"])
    errors = crd_errors(rayjob)
    assert errors and any(field in error for error in errors), errors


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (lambda s: s["rayClusterConfig"].update(workerGroupSpec=[]), "workerGroupSpec"),
        (lambda s: s["rayClusterConfig"]["authOptions"].update(mode="on"), "mode"),
        (lambda s: s["rayClusterConfig"]["workerGroupSpecs"][0].update(maxReplicas="4"), "maxReplicas"),
        (lambda s: s["rayClusterConfig"].pop("headGroupSpec"), "headGroupSpec"),
        (lambda s: s["rayClusterConfig"]["autoscalerOptions"].update(upscalingMode="Fast"), "upscalingMode"),
        (
            lambda s: s["rayClusterConfig"]["gcsFaultToleranceOptions"].update(redisAdress="x:1"),
            "redisAdress",
        ),
        (lambda s: s.update(serveConfigV2={"applications": []}), "serveConfigV2"),
    ],
)
def test_crd_validation_catches_mistakes(rendered, corrupt, field):
    rayservice = copy.deepcopy(find(rendered, "RayService", "cxrl-rewards"))
    corrupt(rayservice["spec"])
    errors = crd_errors(rayservice)
    assert errors and any(field in error for error in errors), errors


# --- PodMonitor against the prometheus-operator CRD ----------------------------------


@pytest.fixture(scope="module")
def podmonitor() -> dict[str, Any]:
    return yaml.safe_load(PODMONITOR.read_text())


def test_podmonitor_is_valid_against_the_prometheus_operator_crd(podmonitor):
    assert podmonitor["kind"] == "PodMonitor"
    assert crd_errors(podmonitor) == []


@pytest.mark.parametrize(
    "corrupt, field",
    [
        (lambda s: s["podMetricsEndpoints"][0].update(port=["metrics"]), "port"),
        (lambda s: s["podMetricsEndpoints"][0].update(interval="15 seconds"), "interval"),
        (lambda s: s["podMetricsEndpoints"][0].update(scheme="tcp"), "scheme"),
        (lambda s: s["podMetricsEndpoints"][0].update(metricsPath="/metrics"), "metricsPath"),
        (lambda s: s.update(namespaceSelector={"matchNames": "cxrl"}), "matchNames"),
        (lambda s: s.pop("selector"), "selector"),
    ],
)
def test_podmonitor_crd_validation_catches_mistakes(podmonitor, corrupt, field):
    broken = copy.deepcopy(podmonitor)
    corrupt(broken["spec"])
    errors = crd_errors(broken)
    assert errors and any(field in error for error in errors), errors


def test_podmonitor_selects_every_reward_pod_on_a_port_it_declares(rendered, podmonitor):
    """What the CRD cannot check: the PodMonitor finds the RayService's pods and their metrics port."""
    spec = podmonitor["spec"]
    rayservice = find(rendered, "RayService", "cxrl-rewards")
    assert spec["namespaceSelector"]["matchNames"] == [rayservice["metadata"]["namespace"]]
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        labels = template["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), labels
        ports = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert {e["port"] for e in spec["podMetricsEndpoints"]} <= ports, ports


# --- Kubernetes' own kinds ------------------------------------------------------------


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_native_objects_are_valid_kubernetes(rendered, k8s_version):
    native = [o for o in rendered if o["kind"] not in CRD_FILES]
    assert {o["kind"] for o in native} >= {
        "Deployment",
        "Service",
        "Secret",
        "PersistentVolumeClaim",
        "NetworkPolicy",
    }
    for obj in native:
        try:
            kv.validate(obj, k8s_version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_native_validation_catches_mistakes():
    rendered = render_overlay("cpu")
    job = copy.deepcopy(find(rendered, "Job", "cxrl-trainer"))
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kv.ValidationError, match="volumeMount"):
        kv.validate(job, K8S_VERSIONS[-1], strict=True)
    service = copy.deepcopy(find(rendered, "Service", "cxrl-redis"))
    service["spec"]["ports"][0]["port"] = "six-three-seven-nine"
    with pytest.raises(kv.ValidationError):
        kv.validate(service, K8S_VERSIONS[-1], strict=True)
    policy = copy.deepcopy(find(rendered, "NetworkPolicy", "cxrl-redis-clients"))
    policy["spec"]["ingress"][0]["form"] = policy["spec"]["ingress"][0].pop("from")
    with pytest.raises(kv.ValidationError, match="form"):
        kv.validate(policy, K8S_VERSIONS[-1], strict=True)


# --- serveConfigV2 through Ray Serve's schema -----------------------------------------


def serve_config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(find(objs, "RayService", "cxrl-rewards")["spec"]["serveConfigV2"])


def test_serve_config_is_valid_for_ray_serve(rendered):
    config = serve_config(rendered)
    schema = ServeDeploySchema.model_validate(config)
    assert {app.name for app in schema.applications} == {"posture", "diagnostic", "consistency", "reward"}
    assert unknown_keys(ServeDeploySchema, config) == []
    assert schema.grpc_options.port == 9000 and schema.http_options.port == 8000


def test_strict_serve_keys_catch_a_misspelt_field(rendered):
    config = serve_config(rendered)
    config["applications"][0]["deployments"][0]["num_replica"] = 2
    ServeDeploySchema.model_validate(config)  # Ray itself lets it through...
    assert unknown_keys(ServeDeploySchema, config) == ["applications[0].deployments[0].num_replica"]


def test_serve_config_import_paths_resolve(rendered):
    config = serve_config(rendered)
    for app in config["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert hasattr(importlib.import_module(module), attr), app["import_path"]
    for function in config["grpc_options"]["grpc_servicer_functions"]:
        module, _, attr = function.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), function
