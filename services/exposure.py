"""What `cxrl serve` exposes, and the tokens it insists on before exposing it.

Measured with ``cxrl.infra.procs.listening_sockets`` on Ray 2.60 (``cxrl serve``, CPU profile):
the FastAPI ingress binds ``http_options.host`` (127.0.0.1 by default), but Ray Serve's gRPC proxy
binds ``[::]:PORT`` (``ray/serve/_private/grpc_util.py``: no host option in ``gRPCOptions``, no
environment variable), and so do Ray's own servers (GCS, raylet, object manager, every worker's
core-worker server) on random ports. Nothing Ray supports binds them to loopback, so:

- the reward API (gRPC proxy, and HTTP when ``--host`` is not loopback) needs ``CXRL_API_TOKEN``;
- Ray's control plane runs with Ray's token auth (``RAY_AUTH_MODE=token``); without an operator's
  ``RAY_AUTH_TOKEN`` a fresh random token is made for the run and handed to Ray's processes in
  their environment only (nothing on disk).

Without them `cxrl serve` refuses to start, saying how to set them; ``--allow-unauthenticated``
(or ``CXRL_ALLOW_UNAUTHENTICATED=1``) runs anyway on a machine nobody else can reach.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import sys

from services.grpc_servicer import TOKEN_ENV

log = logging.getLogger(__name__)

ALLOW_ENV = "CXRL_ALLOW_UNAUTHENTICATED"
RAY_MODE_ENV, RAY_TOKEN_ENV, RAY_TOKEN_PATH_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
NEW_TOKEN_HINT = "export CXRL_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"


class ExposureError(ValueError):
    """`cxrl serve` would listen beyond loopback without a token."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tokens(http_host: str, grpc_port: int, allow_unauthenticated: bool) -> list[str]:
    """Refuse (``ExposureError``) a listener beyond loopback without a token; return warnings to print."""
    allow = allow_unauthenticated or os.environ.get(ALLOW_ENV, "") == "1"
    beyond = [f"gRPC [::]:{grpc_port} (Ray Serve's gRPC proxy binds every interface)"]
    if not is_loopback(http_host):
        beyond.append(f"HTTP {http_host}")
    problems = []
    if not os.environ.get(TOKEN_ENV):
        problems.append(
            f"the reward API would listen beyond loopback ({'; '.join(beyond)}) without a token: "
            f"set {TOKEN_ENV} (e.g. `{NEW_TOKEN_HINT}`) and give clients the same token"
        )
    if os.environ.get(RAY_MODE_ENV, "token").lower() != "token":
        problems.append(
            f"{RAY_MODE_ENV}={os.environ[RAY_MODE_ENV]}: Ray's GCS, raylet and workers listen on every "
            f"interface and would run code for anyone who reaches them; unset {RAY_MODE_ENV} (a fresh "
            f"token is made for this run) or set {RAY_MODE_ENV}=token with {RAY_TOKEN_ENV}"
        )
    if problems and not allow:
        raise ExposureError(
            "cxrl serve refuses to start:\n  - "
            + "\n  - ".join(problems)
            + f"\n(on a machine nobody else can reach: --allow-unauthenticated or {ALLOW_ENV}=1)"
        )
    return [f"WARNING, running unauthenticated: {p}" for p in problems]


def enable_ray_token_auth() -> None:
    """Ray token auth for the local cluster, with a fresh token unless the operator gave one."""
    if os.environ.get(RAY_MODE_ENV, "token").lower() != "token":
        return  # allowed unauthenticated above
    os.environ[RAY_MODE_ENV] = "token"
    if not os.environ.get(RAY_TOKEN_ENV) and not os.environ.get(RAY_TOKEN_PATH_ENV):
        os.environ[RAY_TOKEN_ENV] = secrets.token_hex(32)  # this run's processes only
    if "ray._raylet" in sys.modules:  # Ray read its config at import: have it read the mode again
        from ray._raylet import Config

        Config.initialize("")
