"""The cxrl Grafana dashboard as code (grafana-foundation-sdk), written to cxrl-dashboard.json.

    python deploy/monitoring/dashboard.py            # rewrite deploy/monitoring/cxrl-dashboard.json
    python deploy/monitoring/dashboard.py --check    # exit 1 when the committed JSON differs

Panels: reward requests per second by application and outcome, p50/p95/p99 latency of the gateway
and of each model, refusals by reason, error ratio, queue depth and healthy replicas (Ray Serve's
own metrics), images per second and batch sizes, score-cache hit rate; the trainer's reward curves
(policy and anchor), KL and clip fraction, epoch time. Names: docs/observability.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent / "cxrl-dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
WINDOW = "$__rate_interval"


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def panel(title: str, unit: str, *queries: prometheus.Dataquery, width: int = 12) -> timeseries.Panel:
    p = timeseries.Panel().title(title).unit(unit).height(8).span(width).datasource(DATASOURCE)
    for i, q in enumerate(queries):
        p = p.with_target(q.ref_id(chr(ord("A") + i)))
    return p


def quantiles(metric: str, selector: str, by: str) -> list[prometheus.Dataquery]:
    return [
        query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{WINDOW}])))",
            f"{{{{{by}}}}} p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def build() -> dict:
    d = (
        dashboard.Dashboard("cxrl: reward services and training")
        .uid("cxrl-overview")
        .tags(["cxrl"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    d = d.with_row(dashboard.Row("Reward services"))
    d = d.with_panel(
        panel(
            "Requests per second by application and outcome",
            "reqps",
            query(
                f"sum by (application, status) (rate(ray_cxrl_reward_requests_total[{WINDOW}]))",
                "{{application}} {{status}}",
            ),
        )
    )
    d = d.with_panel(
        panel(
            "Refused requests per second by reason",
            "reqps",
            query(f"sum by (reason) (rate(ray_cxrl_reward_refused_requests_total[{WINDOW}]))", "{{reason}}"),
        )
    )
    d = d.with_panel(
        panel(
            "Latency at the ingress (gateway end to end; model applications' Predict)",
            "s",
            *quantiles("ray_cxrl_reward_request_duration_seconds", 'method=~"Score|Predict"', "application"),
        )
    )
    d = d.with_panel(
        panel("Time per model call", "s", *quantiles("ray_cxrl_reward_model_duration_seconds", "", "model"))
    )
    d = d.with_panel(
        panel(
            "Error ratio (internal, unavailable)",
            "percentunit",
            query("cxrl:reward_request_errors:ratio_rate5m", "{{application}}"),
        )
    )
    d = d.with_panel(
        panel(
            "Queue depth and healthy replicas (Ray Serve)",
            "short",
            query("sum by (application) (ray_serve_deployment_queued_queries)", "{{application}} queued"),
            query(
                "sum by (application) (ray_serve_replica_processing_queries)", "{{application}} processing"
            ),
            # Serve refreshes this gauge every 10 s and Ray exports only what was set since the last
            # export: a series comes and goes between scrapes, so take its last minute's maximum
            query(
                "sum by (application) (max_over_time(ray_serve_deployment_replica_healthy[1m]))",
                "{{application}} replicas",
            ),
        )
    )
    d = d.with_panel(
        panel(
            "Images scored per second and mean batch size",
            "short",
            query(
                f"sum by (model) (rate(ray_cxrl_reward_images_scored_total[{WINDOW}]))", "{{model}} images/s"
            ),
            query(
                f"sum by (model) (rate(ray_cxrl_reward_batch_images_sum[{WINDOW}]))"
                f" / sum by (model) (rate(ray_cxrl_reward_batch_images_count[{WINDOW}]))",
                "{{model}} images per batch",
            ),
        )
    )
    d = d.with_panel(
        panel(
            "Score-cache hit rate",
            "percentunit",
            query(
                f'sum by (model) (rate(ray_cxrl_reward_cache_lookups_total{{result="hit"}}[{WINDOW}]))'
                f" / sum by (model) (rate(ray_cxrl_reward_cache_lookups_total[{WINDOW}]))",
                "{{model}}",
            ),
        )
    )
    d = d.with_row(dashboard.Row("Training"))
    d = d.with_panel(
        panel(
            "Rewards: policy and anchor",
            "short",
            query('cxrl_trainer_epoch_metric{metric=~"(policy|anchor)/.*"}', "{{run}} {{metric}}"),
        )
    )
    d = d.with_panel(
        panel(
            "KL, clip fraction, loss",
            "short",
            query('cxrl_trainer_epoch_metric{metric=~"approx_kl|kl|clipfrac|loss"}', "{{run}} {{metric}}"),
        )
    )
    d = d.with_panel(
        panel(
            "Epoch time by phase and epochs completed",
            "s",
            query('cxrl_trainer_epoch_metric{metric=~"time/.*"}', "{{run}} {{metric}}"),
        )
    )
    d = d.with_panel(
        panel(
            "Throughput and health",
            "short",
            query(f"rate(cxrl_trainer_epochs_completed[{WINDOW}]) * 3600", "{{run}} epochs/h"),
            query('cxrl_trainer_epoch_metric{metric="cache_hit_rate"}', "{{run}} anchor cache hit rate"),
            query("cxrl_trainer_nonfinite_metrics", "{{run}} non-finite metrics"),
        )
    )
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = OUT.is_file() and OUT.read_text() == text
        print("up to date" if same else f"{OUT} differs from the generator: run {__file__}")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
