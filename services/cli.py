"""`cxrl serve`: run the reward services locally from a serve config.

Starts a local Ray head (ours alone), starts Serve with the config's HTTP and
gRPC options (bound to loopback unless ``--host``), deploys the config's
applications exactly as ``serve run CONFIG`` / a KubeRay RayService would, says
where it listens and when every application is running, and on SIGINT/SIGTERM
shuts Serve and Ray down, leaving no process behind.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from cxrl.infra.ports import free_port
from cxrl.infra.procs import FateShare
from services import exposure, metrics
from services.gatekeeper import PROXY_CALLBACK, PROXY_LIMIT_ENV, http_body_limit

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "serve-cpu.yaml"
GRPC_SIZE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
METRICS_HOST = "127.0.0.1"  # the local Ray head's node address: every metrics endpoint binds it
NO_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address may be loopback


def register_serve(subparsers) -> None:
    """Adds `cxrl serve` (found through the ``cxrl.commands`` entry point ``services``)."""
    p = subparsers.add_parser(
        "serve",
        help="run the reward services (Ray Serve: gRPC :9000, HTTP :8000) locally",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"serve config (default {DEFAULT_CONFIG})"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind HTTP and gRPC (default loopback)")
    p.add_argument("--http-port", type=int, default=None, help="override http_options.port")
    p.add_argument("--grpc-port", type=int, default=None, help="override grpc_options.port")
    p.add_argument(
        "--num-cpus", type=float, default=None, help="CPUs the local Ray head offers (default: all)"
    )
    p.add_argument(
        "--num-gpus", type=int, default=None, help="GPUs the local Ray head offers (default: detected)"
    )
    p.add_argument(
        "--local-redis",
        action="store_true",
        help="without REDIS_URL, start a private redis-server for the score cache (default: no cache)",
    )
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for the applications")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of Ray's Prometheus exporter (/metrics: the services' and Ray's metrics), bound to "
        "127.0.0.1 (default: a free port, printed)",
    )
    p.add_argument(
        "--no-metrics", action="store_true", help="record and export no metrics (Ray's and the services')"
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="start without CXRL_API_TOKEN / Ray token auth although ports listen on every interface "
        "(only on a machine nobody else can reach; also CXRL_ALLOW_UNAUTHENTICATED=1)",
    )
    p.set_defaults(func=run)


def load_config(path: Path, host: str, http_port: int | None, grpc_port: int | None) -> dict[str, Any]:
    """Read a serve config, apply the command-line overrides and validate it with Ray's schema."""
    from ray.serve.schema import ServeDeploySchema

    if not Path(path).is_file():
        raise FileNotFoundError(f"serve config not found: {path}")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    data.setdefault("http_options", {})["host"] = host
    if http_port is not None:
        data["http_options"]["port"] = http_port
    if grpc_port is not None:
        data.setdefault("grpc_options", {})["port"] = grpc_port
    try:
        ServeDeploySchema.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError, reported as a config error
        raise ValueError(f"{path} is not a valid serve config:\n{exc}") from exc
    return data


def check_ports_free(config: dict[str, Any]) -> None:
    """Fail fast (instead of a proxy that never starts) when the HTTP or gRPC port is taken."""
    host = config["http_options"]["host"]
    ports = {
        "HTTP": config["http_options"].get("port", 8000),
        "gRPC": config.get("grpc_options", {}).get("port", 9000),
    }
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, int(port)))
            except OSError as exc:
                flag = "--http-port" if name == "HTTP" else "--grpc-port"
                raise ValueError(
                    f"{name} port {host}:{port} is not free ({exc.strerror}); pass {flag}"
                ) from None


def max_request_bytes(config: dict[str, Any]) -> int:
    """The largest ``max_request_bytes`` of the config's applications (0 = one has no limit)."""
    limits = [
        int((app.get("args") or {}).get("max_request_bytes", 64 << 20))
        for app in config.get("applications", [])
    ]
    return 0 if 0 in limits else max(limits, default=64 << 20)


def grpc_message_limit(config: dict[str, Any]) -> int:
    """Transport limit of the gRPC proxy: the gateway's request limit plus 1 MiB of framing, the one
    message limit (HTTP bodies: ``services.gatekeeper.http_body_limit``, its JSON at 4/3 + 1 MiB).
    Requests just over the limit get INVALID_ARGUMENT saying so; far over, the transport's error."""
    limits = [
        int((app.get("args") or {}).get("max_request_bytes", 64 << 20))
        for app in config.get("applications", [])
        if app.get("import_path", "").endswith(":reward_app")
    ]
    limit = max(limits, default=64 << 20)
    return min(limit + (1 << 20), (2 << 30) - 1) if limit else (2 << 30) - 1


def loopback_node() -> None:
    """Make the local Ray head's node address 127.0.0.1, so that every metrics endpoint Ray starts
    (the metrics agent's exporter, the dashboard's and the autoscaler's ``/metrics``, and the agents'
    HTTP servers) binds loopback: Ray binds them to localhost only when the node address is localhost,
    and ``ray.init(_node_ip_address="127.0.0.1")`` is rewritten to the machine's address unless Ray
    is told this is no multi-node cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read at import:
    set before Ray is imported here and inherited by Ray's processes)."""
    os.environ[NO_CLUSTER_ENV] = "0"
    if "ray._private.ray_constants" in sys.modules:  # imported already (the config's schema)
        sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False


def run(args: argparse.Namespace) -> int:
    loopback_node()  # before Ray is imported
    exposure.enable_ray_token_auth()  # before Ray reads its config
    config = load_config(args.config, args.host, args.http_port, args.grpc_port)
    try:
        warnings = exposure.check_tokens(
            config["http_options"]["host"],
            config["grpc_options"].get("port", 9000),
            args.allow_unauthenticated,
        )
    except exposure.ExposureError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 2
    for warning in warnings:
        print(f"cxrl serve: {warning}", flush=True)
    check_ports_free(config)
    with contextlib.ExitStack() as stack:
        # everything started from here on (Ray's processes, redis-server) dies with us, even on SIGKILL
        fate = stack.enter_context(FateShare())
        if args.local_redis and not os.environ.get("REDIS_URL"):
            from cxrl.infra.redis_local import LocalRedis

            os.environ["REDIS_URL"] = stack.enter_context(LocalRedis())
            print(f"cxrl serve: score cache in a private Redis at {os.environ['REDIS_URL']}", flush=True)
            fate.track_children()  # redis-server rewrites its environment (process title): track its pid
        return _run_ray(config, args)


def _run_ray(config: dict[str, Any], args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's metrics endpoints (the metrics agent's exporter, the dashboard's and the autoscaler's
    # /metrics) bind the node's address and answer without a token: the node is 127.0.0.1, so all of
    # them listen on loopback only (Ray binds them to localhost when the node address is; scrape
    # from this host, or through a token-checking proxy)
    metrics_port = None
    if args.no_metrics:
        os.environ["RAY_enable_metrics_collection"] = "0"
        os.environ[metrics.ENABLE_ENV] = "0"
    else:
        os.environ.setdefault("RAY_EXPORT_COUNTER_AS_GAUGE", "0")  # counters as counters only
        metrics_port = args.metrics_port or free_port(METRICS_HOST)
    os.environ.setdefault(GRPC_SIZE_ENV, str(grpc_message_limit(config)))
    # the token and body limit checked in Ray's HTTP proxy too, before it buffers a body
    os.environ.setdefault(PROXY_LIMIT_ENV, str(http_body_limit(max_request_bytes(config))))
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    import ray

    previous = {}
    try:
        ray.init(
            address="local",
            num_cpus=None if args.num_cpus is None else max(1, math.ceil(args.num_cpus)),
            num_gpus=args.num_gpus,
            include_dashboard=False,
            namespace="serve",
            log_to_driver=True,
            _metrics_export_port=metrics_port,
        )
        node = ray.util.get_node_ip_address()
        if node != METRICS_HOST:  # Ray's metrics endpoints would answer on every interface
            raise RuntimeError(f"Ray's node address is {node}, not {METRICS_HOST}: not starting")
        if metrics_port:
            print(
                f"cxrl serve: metrics on http://{METRICS_HOST}:{metrics_port}/metrics (loopback)", flush=True
            )
        # after ray.init, which installs its own SIGTERM handler (exit without serve shutdown)
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return _serve(config, args.ready_timeout, stop)
    finally:
        _shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _serve(config: dict[str, Any], ready_timeout: float, stop: threading.Event) -> int:
    from ray import serve
    from ray.serve._private.api import serve_start  # what `serve run CONFIG` uses to deploy a config
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
    )
    client.deploy_apps(schema, _blocking=False)
    http, grpc_ = schema.http_options, schema.grpc_options
    names = [a.name for a in schema.applications]
    print(
        f"cxrl serve: gRPC on [::]:{grpc_.port}, every interface (Ray Serve's gRPC proxy cannot bind one "
        f"address; metadata application = {', '.join(names)})",
        flush=True,
    )
    print(f"cxrl serve: HTTP on http://{http.host}:{http.port} (OpenAPI docs at /docs)", flush=True)
    deadline = time.monotonic() + ready_timeout
    while not stop.is_set():
        state = _app_states(serve.status())
        failed = {n: m for n, (s, m) in state.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            for name, message in failed.items():
                log.error("application %s failed: %s", name, message)
            return 1
        if names and all(state.get(n, ("",))[0] == "RUNNING" for n in names):
            break
        if time.monotonic() > deadline:
            log.error("applications not running after %.0f s: %s", ready_timeout, state)
            return 1
        stop.wait(0.5)
    else:
        return 0
    print("cxrl serve: ready (Ctrl-C or SIGTERM to stop)", flush=True)
    stop.wait()
    return 0


def _app_states(status) -> dict[str, tuple[str, str]]:
    return {name: (str(app.status.value), app.message) for name, app in status.applications.items()}


def _shutdown() -> None:
    import ray

    if not ray.is_initialized():
        return
    try:
        from ray import serve

        serve.shutdown()
    except Exception as exc:  # shutting down anyway
        log.warning("serve shutdown: %s", exc)
    ray.shutdown()
    print("cxrl serve: stopped", flush=True)
