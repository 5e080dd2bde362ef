"""Health check of the cxrl containers (Docker HEALTHCHECK, compose, the trainer Job's init
container): exit 0 when every named endpoint answers, 1 with one line per failure.

    healthcheck.py --grpc 127.0.0.1:9000 --http http://127.0.0.1:8000   # reward services
    healthcheck.py --from-env                                           # trainer: its dependencies
    healthcheck.py --from-env --wait 1800                               # wait until healthy
    healthcheck.py --require-token                                      # refuse a weak API token

Checks:
- ``--grpc ADDR``: the ``Info`` RPC of every Serve application (``reward`` through
  RewardService, ``posture``/``diagnostic``/``consistency`` through ModelService, routed by
  the ``application`` metadata key) answers and names at least one model. A proxy that is
  up while an application is still deploying is therefore not healthy yet.
- ``--http URL``: ``GET URL/healthz`` of the reward gateway's HTTP ingress returns 200.
- ``--redis URL``: Redis answers PING.
- ``--from-env``: ``--redis $REDIS_URL`` and ``--grpc $CXRL_REWARD_ADDRESS`` (each when set;
  a ``grpc://`` prefix is accepted).
- ``--require-token``: ``$CXRL_API_TOKEN`` must hold at least 32 characters (the init
  containers of deploy/ run this, so no pod serves or trains with an empty token); checked
  first, never retried.
Calls carry ``authorization: Bearer $CXRL_API_TOKEN`` when that variable is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

APPLICATIONS = ("reward", "posture", "diagnostic", "consistency")
MIN_TOKEN_CHARS = 32


def check_token(token: str) -> list[str]:
    if len(token.strip()) < MIN_TOKEN_CHARS:
        return [
            f"CXRL_API_TOKEN holds {len(token.strip())} characters, needs at least {MIN_TOKEN_CHARS}: "
            "set a random one in the Secret cxrl-api-token (deploy/secrets.sh writes one)"
        ]
    return []


def check_grpc(address: str, apps: list[str], token: str, timeout: float) -> list[str]:
    import grpc

    from cxrl.reward.v1 import reward_pb2, reward_pb2_grpc

    address = address.removeprefix("grpc://")
    problems = []
    with grpc.insecure_channel(address) as channel:
        for app in apps:
            stub_class = (
                reward_pb2_grpc.RewardServiceStub if app == "reward" else reward_pb2_grpc.ModelServiceStub
            )
            metadata = [("application", app)] + ([("authorization", f"Bearer {token}")] if token else [])
            try:
                info = stub_class(channel).Info(reward_pb2.InfoRequest(), metadata=metadata, timeout=timeout)
            except grpc.RpcError as exc:
                problems.append(f"gRPC {address} application {app!r}: {exc.code().name}: {exc.details()}")
                continue
            if not info.models:
                problems.append(f"gRPC {address} application {app!r}: Info names no model")
    return problems


def check_http(url: str, timeout: float) -> list[str]:
    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [f"HTTP {target}: {exc}"]
    if body.get("status") != "ok":
        return [f"HTTP {target}: unexpected body {body}"]
    return []


def check_redis(url: str, timeout: float) -> list[str]:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return [f"Redis {url}: {exc}"]
    return []


def run_checks(args: argparse.Namespace) -> list[str]:
    token = os.environ.get("CXRL_API_TOKEN", "")
    problems = []
    for address in args.grpc:
        problems += check_grpc(address, args.apps, token, args.timeout)
    for url in args.http:
        problems += check_http(url, args.timeout)
    for url in args.redis:
        problems += check_redis(url, args.timeout)
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", action="append", default=[], help="gRPC address of the Serve proxy")
    parser.add_argument("--http", action="append", default=[], help="base URL of the HTTP ingress")
    parser.add_argument("--redis", action="append", default=[], help="Redis URL")
    parser.add_argument("--from-env", action="store_true", help="check $REDIS_URL and $CXRL_REWARD_ADDRESS")
    parser.add_argument("--apps", nargs="+", default=list(APPLICATIONS), help="Serve applications to ask")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    parser.add_argument("--wait", type=float, default=0.0, help="retry until healthy for this many seconds")
    parser.add_argument("--require-token", action="store_true", help="fail unless CXRL_API_TOKEN is strong")
    args = parser.parse_args(argv)
    if args.from_env:
        args.redis += [os.environ["REDIS_URL"]] if os.environ.get("REDIS_URL") else []
        args.grpc += [os.environ["CXRL_REWARD_ADDRESS"]] if os.environ.get("CXRL_REWARD_ADDRESS") else []
    if not (args.grpc or args.http or args.redis or args.require_token):
        parser.error("nothing to check: give --grpc, --http, --redis or --from-env with the variables set")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.require_token and (problems := check_token(os.environ.get("CXRL_API_TOKEN", ""))):
        print(f"unhealthy: {problems[0]}", file=sys.stderr, flush=True)
        return 1
    deadline = time.monotonic() + args.wait
    while True:
        problems = run_checks(args)
        if not problems:
            print("healthy", flush=True)
            return 0
        if time.monotonic() >= deadline:
            break
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
