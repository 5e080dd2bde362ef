"""Alerting rules and the Prometheus config in deploy/monitoring, checked by the real promtool
(Debian's `prometheus` package; `make prometheus` installs it): syntax, and unit tests of every
alert (deploy/monitoring/alerts-test.yml) firing on the series that should fire it and only those."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from services.metrics import METRICS, RAY_PREFIX

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TRAINER_FAMILIES = {
    "cxrl_trainer_epoch_metric",
    "cxrl_trainer_epochs_completed",
    "cxrl_trainer_last_epoch_timestamp_seconds",
    "cxrl_trainer_nonfinite_metrics",
}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    assert Path(PROMTOOL).exists(), "promtool is missing: run `make prometheus` (Debian's package)"
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)


def test_rules_and_config_pass_promtool_check():
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and "SUCCESS: 7 rules found" in rules.stdout, rules.stdout + rules.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_is_unit_tested_and_passes_promtool_test_rules():
    out = _promtool("test", "rules", "alerts-test.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tested = {
        t["alertname"]
        for case in yaml.safe_load((MONITORING / "alerts-test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert (
        alerts
        == tested
        == {
            "CxrlRewardErrorRate",
            "CxrlRewardP95OverDeadline",
            "CxrlRewardNoReplicas",
            "CxrlTrainingStalled",
            "CxrlTrainingNonFiniteMetrics",
        }
    )


def test_promtool_test_rules_fails_a_wrong_expectation(tmp_path):
    """Not vacuous: a test that expects the error-rate alert on healthy traffic fails."""
    tests = yaml.safe_load((MONITORING / "alerts-test.yml").read_text())
    tests["rule_files"] = [str(MONITORING / "alerts.yml")]
    tests["tests"][0]["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"application": "posture"}}]
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests))
    out = _promtool("test", "rules", str(tmp_path / "t.yml"))
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def test_rules_name_only_metrics_that_exist():
    """Every ray_cxrl_* / cxrl_trainer_* name in the rules is one the services or the trainer export."""
    text = (MONITORING / "alerts.yml").read_text()
    ours = {RAY_PREFIX + n + ("_total" if kind == "counter" else "") for n, (kind, *_) in METRICS.items()}
    ours |= {
        RAY_PREFIX + n + s
        for n, (kind, *_) in METRICS.items()
        if kind == "histogram"
        for s in ("_bucket", "_sum", "_count")
    }
    used = set(re.findall(r"\b(?:ray_cxrl_\w+|cxrl_trainer_\w+)", text))
    assert used and used <= ours | TRAINER_FAMILIES, used - ours - TRAINER_FAMILIES


def test_dashboard_generator_reproduces_the_committed_json():
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("cxrl_dashboard", MONITORING / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # grafana-foundation-sdk builds it
    assert module.render() == (MONITORING / "cxrl-dashboard.json").read_text(), (
        "run deploy/monitoring/dashboard.py"
    )
    board = json.loads(module.render())
    panels = [p for p in board["panels"] if p["type"] == "timeseries"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(panels) == 12 and all(
        len({t["refId"] for t in p["targets"]}) == len(p["targets"]) for p in panels
    )
    ours = {
        RAY_PREFIX + n + s
        for n, (kind, *_) in METRICS.items()
        for s in (("_total",) if kind == "counter" else ("_bucket", "_sum", "_count"))
    }
    used = {m for e in exprs for m in re.findall(r"\b(?:ray_cxrl_\w+|cxrl_trainer_\w+)", e)}
    assert used <= ours | TRAINER_FAMILIES, used - ours - TRAINER_FAMILIES
    assert used >= {
        "ray_cxrl_reward_requests_total",
        "ray_cxrl_reward_refused_requests_total",
        "ray_cxrl_reward_cache_lookups_total",
        "cxrl_trainer_epoch_metric",
    }


def test_compose_check_waits_for_every_alert_of_the_rules_file(tmp_path):
    """prometheus_check.py (make compose-check) waits until Prometheus has loaded each alert the rules
    file defines: alerts only, recording rules and look-alike text not counted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prometheus_check", MONITORING.parent / "docker" / "prometheus_check.py"
    )
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: a\n  rules:\n  - record: job:x:rate5m\n    expr: rate(x[5m])\n"
        "  - alert: First\n    expr: up == 0\n    annotations: {summary: 'alert: NotOne'}\n"
        "- name: b\n  rules:\n  - {alert: Second, expr: vector(1)}\n"
    )
    assert check.alert_names(rules) == {"First", "Second"}
    defined = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    assert (
        check.alert_names(MONITORING / "alerts.yml")
        == {r["alert"] for g in defined["groups"] for r in g["rules"] if "alert" in r}
        != set()
    )
