"""Serve autoscaling, exercised: `cxrl serve` with the autoscaling profile scales a model deployment
from 1 replica to 2 or more under load and back to 1 after it, losing no request.

The live test runs ``bench.bench_autoscale`` (what `python -m bench.bench_autoscale` runs) on the
profile's ``posture`` application alone (one model to load: the service is up in about a minute on
2 busy cores), with 3 load clients, so the autoscaler wants 2 replicas (target 2 ongoing requests
each). Replica counts come from ``serve.status()``, every 0.5 s; every request is sent once.
"""

from __future__ import annotations

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from bench.bench_autoscale import CONFIG, Plan, format_timeline, profile, run


@pytest.mark.filterwarnings(
    "ignore:The `metrics_interval_s` field:DeprecationWarning"
)  # still the knob in ray 2.60
def test_autoscale_profile_scales_every_deployment_on_fractional_cpus():
    data = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(data)
    deployments = [d for app in data["applications"] for d in app["deployments"]]
    assert len(deployments) == 4
    for d in deployments:
        auto = d["autoscaling_config"]
        assert "num_replicas" not in d, d["name"]  # the autoscaler decides
        assert auto["min_replicas"] == 1 and auto["max_replicas"] == 4, d["name"]
        assert auto["upscale_delay_s"] <= 5 and auto["downscale_delay_s"] <= 10, d["name"]
        assert auto["look_back_period_s"] > auto["metrics_interval_s"], d["name"]
        assert 0 < d["ray_actor_options"]["num_cpus"] <= 0.25, d["name"]
    # every deployment at its maximum fits the 2 CPUs the tests and benchmarks give Ray
    assert (
        sum(d["autoscaling_config"]["max_replicas"] * d["ray_actor_options"]["num_cpus"] for d in deployments)
        <= 2
    )


def test_profile_keeps_only_the_named_applications(tmp_path):
    data = yaml.safe_load(profile(tmp_path / "p.yaml", ["posture"]).read_text())
    assert [a["name"] for a in data["applications"]] == ["posture"]
    assert data["grpc_options"] == yaml.safe_load(CONFIG.read_text())["grpc_options"]
    with pytest.raises(ValueError, match="no application"):
        profile(tmp_path / "q.yaml", ["nope"])


@pytest.mark.service
@pytest.mark.slow
@pytest.mark.own_process  # joins the service's Ray cluster as a driver
def test_posture_scales_up_under_load_and_back_down_losing_no_request(tmp_path):
    plan = Plan(clients=3, idle_s=3.0, hold_s=4.0, load_s=100.0, cooldown_s=60.0, settle_s=2.0)
    result = run(plan, profile(tmp_path / "serve-autoscale.yaml", ["posture"]), nice=10)
    print(format_timeline(result))
    assert result["stopped_cleanly"], result["serve_log_tail"]
    phases = {p: [r for r in result["timeline"] if r["phase"] == p] for p in ("idle", "load", "cooldown")}
    assert phases["idle"] and all(r["running"] == 1 for r in phases["idle"]), format_timeline(result)
    # up: 2+ replicas running while the load was on (the load phase ends only after they ran 4 s)
    assert max(r["running"] for r in phases["load"]) >= 2, format_timeline(result)
    assert result["seconds_to_scale_up"] is not None
    # down: still 2+ when the load ended, then back to exactly 1, nothing starting or stopping
    assert phases["cooldown"][0]["running"] >= 2, format_timeline(result)
    last = phases["cooldown"][-1]
    assert (last["running"], last["starting"], last["stopping"]) == (1, 0, 0), format_timeline(result)
    # no request lost: every one answered OK, in every phase (the trickle ran through the scale-down)
    assert result["requests_failed"] == 0, result["errors"]
    assert all(result["requests_by_phase"][p]["ok"] > 0 for p in phases), result["requests_by_phase"]
