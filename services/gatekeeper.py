"""ASGI middleware in front of the FastAPI routes: no work before auth, no body over the limit.

FastAPI reads and parses the whole body before a route's own code runs, so a check in the route
comes after the work. ``Gatekeeper`` runs first, on the headers alone:

- with a token configured, a request without ``Authorization: Bearer <token>`` gets 401 before a
  byte of its body is read (the docs, the OpenAPI schema and ``/healthz`` stay public: they hold
  no data and health probes carry no token);
- a ``Content-Length`` over the body limit gets 413 before the body is read;
- a body without a length (chunked) is counted while it streams in and gets 413 the moment it
  passes the limit, so nothing over the limit is ever held.

The body limit is ``http_body_limit(max_request_bytes)``: the JSON of a request at the gateway's
message limit (base64 is 4/3 of the bytes it carries) plus room for the reports and JSON syntax.

It runs twice under Ray Serve: in each replica's FastAPI app, and in Ray's HTTP proxy itself
(``proxy_middlewares``, named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``), because the proxy
reads every request body into an unbounded queue before any replica sees it (measured: 256 MiB
bodies grew the serve processes' peak memory by 911 MiB without it).
"""

from __future__ import annotations

import json
import logging
import os

from services.grpc_servicer import UNAUTHENTICATED_MESSAGE, authorized
from services.metrics import OFF, ServiceMetrics, route_method

log = logging.getLogger(__name__)

JSON_OVERHEAD_BYTES = 1 << 20  # reports, field names and JSON syntax on top of the base64 payload
PUBLIC_SUFFIXES = ("/healthz", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect")
DOCS_ASSETS = "/docs-assets"  # where the docs pages' scripts and styles are served (fastapi-offline)
PUBLIC_PARTS = (DOCS_ASSETS + "/",)


PROXY_LIMIT_ENV = "CXRL_HTTP_BODY_LIMIT"  # the proxy's body limit in bytes, set by `cxrl serve`
PROXY_CALLBACK = "services.gatekeeper.proxy_middlewares"  # for RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH


def proxy_middlewares() -> list:
    """Ray Serve's HTTP proxy callback: the Gatekeeper in front of every application, with the
    token (``CXRL_API_TOKEN``) and body limit (``CXRL_HTTP_BODY_LIMIT``) from the environment."""
    from starlette.middleware import Middleware

    from services.grpc_servicer import server_token

    limit = int(os.environ.get(PROXY_LIMIT_ENV, "0") or 0)
    return [Middleware(Gatekeeper, token=server_token(), max_body_bytes=limit, metrics=ServiceMetrics())]


def http_body_limit(max_request_bytes: int) -> int:
    """Largest HTTP body accepted for a gateway whose message limit is ``max_request_bytes`` (0 = none)."""
    return 0 if max_request_bytes <= 0 else max_request_bytes * 4 // 3 + JSON_OVERHEAD_BYTES


def is_public(method: str, path: str) -> bool:
    """Routes anyone may GET: the API docs and the health check."""
    path = path.rstrip("/") or "/"
    return method in ("GET", "HEAD") and (
        path.endswith(PUBLIC_SUFFIXES) or any(p in path for p in PUBLIC_PARTS)
    )


class Gatekeeper:
    """ASGI middleware: token and size checked on the headers, streamed bodies capped."""

    def __init__(self, app, token: str, max_body_bytes: int, metrics: ServiceMetrics = OFF):
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics  # refusals by reason (auth, size)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.token and not is_public(scope["method"], scope["path"]):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if not authorized(auth, self.token):
                self.metrics.refused(route_method(scope["path"]), "http", "auth")
                return await reply(send, 401, UNAUTHENTICATED_MESSAGE, {"www-authenticate": "Bearer"})
        if not self.max_body_bytes:
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            self.metrics.refused(route_method(scope["path"]), "http", "size")
            return await reply(send, 413, self._too_large(length.decode("latin-1")))
        return await self._capped(scope, receive, send)

    async def _capped(self, scope, receive, send):
        """Run the app with a ``receive`` that answers 413 itself once the body passes the limit and
        then tells the app the client is gone (FastAPI turns any error while reading into a 400)."""
        seen, started, refused = 0, False, False

        async def capped_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    refused = True
                    self.metrics.refused(route_method(scope["path"]), "http", "size")
                    log.warning("refused a streamed body at %d bytes (limit %d)", seen, self.max_body_bytes)
                    if not started:
                        await reply(send, 413, self._too_large(f"more than {self.max_body_bytes}"))
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message):
            nonlocal started
            if refused:  # the app's answer to the disconnect: the client already has its 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, capped_receive, watched_send)

    def _too_large(self, length: str) -> str:
        return (
            f"request body of {length} bytes is over the server's limit of {self.max_body_bytes} bytes "
            "(the JSON of a request at max_request_bytes); split the batch into smaller requests"
        )


async def reply(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON ``{"detail": ...}`` response; the connection is closed (the body was not read)."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(b"connection", b"close")] + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
