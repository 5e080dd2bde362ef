"""The trainer's ``/metrics`` endpoint: each finished epoch's metrics as Prometheus gauges.

A sink of the engine (:class:`cxrl.rl.sinks.Sink`) that keeps its own ``prometheus_client``
registry and serves it with ``prometheus_client.start_http_server`` on ``metrics.host``
(127.0.0.1 unless the config says otherwise; Kubernetes: the pod address behind a NetworkPolicy
that admits only the monitoring namespace). Families (docs/observability.md):

- ``cxrl_trainer_epoch_metric{run, metric}``: every numeric value of the epoch's metrics dict, the
  key as the ``metric`` label, unchanged (``policy/total``, ``approx_kl``, ``time/epoch``, ...), so
  the names are those of ``history.jsonl`` and TensorBoard, whatever they are;
- ``cxrl_trainer_epochs_completed{run}``: epochs done (``epoch`` + 1);
- ``cxrl_trainer_last_epoch_timestamp_seconds{run}``: when the last epoch finished (stall alerts);
- ``cxrl_trainer_nonfinite_metrics{run}``: how many values of the last epoch were NaN or infinite.

No report text, image or token ever reaches a label: only the run id and the metric keys.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from pydantic import Field

from cxrl.config import ConfigModel
from cxrl.rl.sinks import Sink

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class MetricsSettings(ConfigModel):
    """The trainer's Prometheus endpoint (``/metrics``)."""

    port: int | None = Field(
        None, ge=0, le=65535, description="port of /metrics; None = no endpoint; 0 = a free port (logged)"
    )
    host: str = Field(
        "127.0.0.1",
        description="address to bind; anything but loopback only behind a network policy "
        "(the metrics carry no token check)",
    )


class PrometheusSink(Sink):
    """Serves the run's epoch metrics on ``http://host:port/metrics`` until :meth:`close`."""

    def __init__(self, run_id: str, host: str = "127.0.0.1", port: int = 0):
        self.run_id = run_id
        self.registry = CollectorRegistry()
        labels = ["run"]
        self.value = Gauge(
            "cxrl_trainer_epoch_metric",
            "The last finished epoch's metrics, one series per key of the epoch's metrics dict.",
            ["run", "metric"],
            registry=self.registry,
        )
        self.epochs = Gauge(
            "cxrl_trainer_epochs_completed", "Epochs the run has finished.", labels, registry=self.registry
        )
        self.finished_at = Gauge(
            "cxrl_trainer_last_epoch_timestamp_seconds",
            "Unix time at which the last epoch finished.",
            labels,
            registry=self.registry,
        )
        self.nonfinite = Gauge(
            "cxrl_trainer_nonfinite_metrics",
            "Values of the last epoch's metrics that were NaN or infinite.",
            labels,
            registry=self.registry,
        )
        if host not in LOOPBACK:
            log.warning(
                "trainer metrics on %s:%s, beyond loopback: keep it behind a network policy", host, port
            )
        self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        self.host, self.port = host, int(self.server.server_address[1])
        log.info("trainer metrics on http://%s:%d/metrics", host, self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def epoch(self, metrics: dict[str, Any]) -> None:
        bad = 0
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            value = float(value)
            bad += not math.isfinite(value)
            self.value.labels(self.run_id, key).set(value)
        self.nonfinite.labels(self.run_id).set(bad)
        if "epoch" in metrics:
            self.epochs.labels(self.run_id).set(int(metrics["epoch"]) + 1)
        self.finished_at.labels(self.run_id).set(time.time())

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def metrics_sink(settings: MetricsSettings, run_id: str) -> PrometheusSink | None:
    """The run's ``/metrics`` sink, or None when ``settings.port`` is None."""
    if settings.port is None:
        return None
    return PrometheusSink(run_id, settings.host, settings.port)
