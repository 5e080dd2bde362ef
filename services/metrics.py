"""Prometheus metrics of the reward services, recorded with Ray's metrics API (``ray.serve.metrics``).

Every replica records into Ray's metrics pipeline; the node's metrics agent exports them, with
Ray Serve's own metrics (queue depth, replica health, proxy requests), on Ray's metrics export
port, which ``cxrl serve`` binds to loopback (``services.cli``). Ray adds the ``ray_`` prefix and,
in a replica, the tags ``application``, ``deployment`` and ``replica``; counters get ``_total``.
The one table of names and labels is docs/observability.md (``METRICS`` below is its source).

Labels carry no request content: no images, reports, tokens or request ids, only the bounded
vocabularies below (:data:`STATUSES`, :data:`REASONS`, method and model names).

``CXRL_METRICS=0`` (``cxrl serve --no-metrics``) turns recording off, and so does a process
without Ray (the unit tests' plain ``ModelServer``): every method is then a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import grpc

log = logging.getLogger(__name__)

ENABLE_ENV = "CXRL_METRICS"  # "0": no metrics (set by `cxrl serve --no-metrics`)
RAY_PREFIX = "ray_"  # what Ray's exporter puts before every name

# request outcome: the gRPC status names (HTTP statuses map onto them, see HTTP_STATUS_NAME)
STATUSES = ("ok", "invalid_argument", "unauthenticated", "resource_exhausted", "unavailable", "internal")
# why a request was refused
REASONS = ("auth", "size", "images", "pixels", "report", "invalid", "overload", "unavailable")
HTTP_STATUS_NAME = {
    200: "ok",
    401: "unauthenticated",
    413: "invalid_argument",
    422: "invalid_argument",
    429: "resource_exhausted",
    503: "unavailable",
}
# seconds: 1 ms .. 240 s (a 224 px DenseNet batch on a CPU takes seconds; the trainer's deadline is 120 s)
LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 240]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

# name (as recorded; exported as ray_<name>[_total]) -> (kind, labels besides Serve's, help)
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cxrl_reward_requests": (
        "counter",
        ("method", "protocol", "status"),
        "Requests answered by an ingress (gateway or model application), by outcome.",
    ),
    "cxrl_reward_refused_requests": (
        "counter",
        ("method", "protocol", "reason"),
        "Requests refused before or instead of scoring, by reason.",
    ),
    "cxrl_reward_request_duration_seconds": (
        "histogram",
        ("method", "protocol"),
        "End-to-end time of a request in an ingress replica (the gateway: every model it called).",
    ),
    "cxrl_reward_model_duration_seconds": (
        "histogram",
        ("model",),
        "Time a model replica spends on one call (cache look-up, batching wait, forward passes).",
    ),
    "cxrl_reward_images_scored": (
        "counter",
        ("model",),
        "Images a model scored (cache hits included).",
    ),
    "cxrl_reward_batch_images": (
        "histogram",
        ("model",),
        "Images in one forward pass of a model (the @serve.batch batch, callers together).",
    ),
    "cxrl_reward_cache_lookups": (
        "counter",
        ("model", "result"),
        "Score-cache look-ups per image: result hit or miss.",
    ),
}
ROUTE_METHODS = {"/v1/score": "Score", "/v1/predict": "Predict", "/v1/info": "Info"}


def route_method(path: str) -> str:
    """The RPC name of an HTTP route (a bounded label: ``other`` for anything else)."""
    path = path.rstrip("/")
    return next((m for suffix, m in ROUTE_METHODS.items() if path.endswith(suffix)), "other")


def enabled() -> bool:
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return False
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def status_of(code: grpc.StatusCode | None) -> str:
    return "ok" if code is None else code.name.lower()


def reason_of(exc: BaseException | None, status: str) -> str | None:
    """Why a request with this outcome was refused (None: it was not)."""
    if status == "unauthenticated":
        return "auth"
    if status == "invalid_argument":
        return getattr(exc, "reason", "invalid")
    if status == "resource_exhausted":
        return "overload"
    if status == "unavailable":
        return "unavailable"
    return None


class ServiceMetrics:
    """The metrics one replica (or Ray's HTTP proxy) records; no-ops when metrics are off."""

    def __init__(self, on: bool | None = None):
        self.on = enabled() if on is None else on
        self._m: dict = {}
        if not self.on:
            return
        from ray.serve import metrics as serve_metrics

        kinds = {"counter": serve_metrics.Counter, "histogram": serve_metrics.Histogram}
        for name, (kind, labels, description) in METRICS.items():
            kwargs = {}
            if kind == "histogram":
                kwargs["boundaries"] = BATCH_BUCKETS if name.endswith("_images") else LATENCY_BUCKETS
            self._m[name] = kinds[kind](name, description=description, tag_keys=labels, **kwargs)

    def _inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        if self.on and value:
            self._m[name].inc(value, tags=tags)

    def _observe(self, name: str, value: float, **tags: str) -> None:
        if self.on:
            self._m[name].observe(value, tags=tags)

    def request(self, method: str, protocol: str, status: str, seconds: float, reason: str | None) -> None:
        """One answered request at an ingress (gRPC RPC or HTTP route)."""
        self._inc("cxrl_reward_requests", method=method, protocol=protocol, status=status)
        self._observe("cxrl_reward_request_duration_seconds", seconds, method=method, protocol=protocol)
        if reason is not None:
            self._inc("cxrl_reward_refused_requests", method=method, protocol=protocol, reason=reason)

    @contextlib.contextmanager
    def model_call(self, model: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._observe("cxrl_reward_model_duration_seconds", time.perf_counter() - t0, model=model)

    def scored(self, model: str, images: int) -> None:
        self._inc("cxrl_reward_images_scored", images, model=model)

    def batch(self, model: str, images: int) -> None:
        self._observe("cxrl_reward_batch_images", images, model=model)

    def cache(self, model: str, hits: int, misses: int) -> None:
        self._inc("cxrl_reward_cache_lookups", hits, model=model, result="hit")
        self._inc("cxrl_reward_cache_lookups", misses, model=model, result="miss")

    def refused(self, method: str, protocol: str, reason: str) -> None:
        """A request refused on its headers (the Gatekeeper: in Ray's HTTP proxy, no application label)."""
        self._inc("cxrl_reward_refused_requests", method=method, protocol=protocol, reason=reason)


OFF = ServiceMetrics(on=False)


class Timer:
    """Seconds since construction (``perf_counter``)."""

    def __init__(self):
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0
