"""HTTP/JSON ingress of the ``reward`` application (FastAPI; OpenAPI docs at ``/docs``).

The JSON bodies are the proto messages' JSON mapping (field names as in
``reward.proto``, bytes as base64), so HTTP and gRPC share one decoder and give
identical results. Bad input -> 422 with a message (also a body that is not JSON,
is nested too deeply to parse, or carries fields the API does not have, as the
proto JSON mapping rejects unknown fields); with ``CXRL_API_TOKEN`` set, a missing
or wrong ``Authorization: Bearer`` header -> 401. A model deployment over its queue
limit -> 429 and a model replica that died mid-call -> 503 (both with Retry-After);
the gateway's own queue limit is enforced by Serve's proxy (429, ``backpressure_config``).
"""

from __future__ import annotations

import math
from typing import Literal

import grpc
from fastapi import FastAPI, Header, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from cxrl.reward.v1 import reward_pb2 as pb
from services.gatekeeper import DOCS_ASSETS, Gatekeeper, http_body_limit
from services.grpc_servicer import UNAUTHENTICATED_MESSAGE, authorized, transient_status
from services.metrics import OFF, ServiceMetrics, Timer, reason_of, route_method

HTTP_STATUS = {grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503}


class RequestModel(BaseModel):
    """A request body: unknown fields are errors (a misspelt ``anchor_images`` must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class TensorJSON(RequestModel):
    data: str = Field("", description="base64 of the C-order tensor bytes")
    shape: list[int] = Field(default_factory=list, description="[B, H, W] or [B, 1, H, W]")
    dtype: Literal["DTYPE_UINT8", "DTYPE_FLOAT32", "DTYPE_FLOAT16"] = Field(
        "DTYPE_UINT8", description="uint8 (0..255) or float in [0, 1]"
    )


class EncodedJSON(RequestModel):
    images: list[str] = Field(
        default_factory=list, description="base64 PNG blobs, one per image, all one size"
    )


class ImageBatchJSON(RequestModel):
    tensor: TensorJSON | None = Field(None, description="raw tensor form")
    encoded: EncodedJSON | None = Field(None, description="encoded-image form")


class ScoreBody(RequestModel):
    request_id: str = Field("", description="echoed back")
    images: ImageBatchJSON = Field(description="images to score")
    reports: list[str] = Field(default_factory=list, description="one report per image")
    anchor_images: ImageBatchJSON | None = Field(None, description="anchor images for comparative rewards")
    weights: dict[str, float] = Field(
        default_factory=dict, description="subset of align/diag/consist with weights; empty = server defaults"
    )


class ComponentsJSON(BaseModel):
    psi: list[float] = Field(default_factory=list, description="(sx, sy, tx, ty, theta)")
    r_align: float | None = None
    diag_acc: float | None = None
    diag_probs: list[float] = Field(default_factory=list, description="ordered as diag_labels")
    consistency: float | None = None


class ImageResultJSON(BaseModel):
    policy: ComponentsJSON
    anchor: ComponentsJSON | None = None
    total: float = 0.0


class ModelInfoJSON(BaseModel):
    name: str
    version: str
    weights_hash: str


class ScoreResponseJSON(BaseModel):
    request_id: str = ""
    results: list[ImageResultJSON] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)
    comparative: bool = False
    models: list[ModelInfoJSON] = Field(default_factory=list)
    diag_labels: list[str] = Field(default_factory=list)


class InfoResponseJSON(BaseModel):
    models: list[ModelInfoJSON] = Field(default_factory=list)
    default_weights: dict[str, float] = Field(default_factory=dict)
    diag_labels: list[str] = Field(default_factory=list)
    max_request_bytes: int = 0
    max_batch_images: int = 0


def to_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class PredictBody(RequestModel):
    request_id: str = Field("", description="echoed back")
    images: ImageBatchJSON = Field(description="images to score")
    reports: list[str] = Field(default_factory=list, description="one report per image (posture: any text)")


class PredictResponseJSON(BaseModel):
    request_id: str = ""
    results: list[ComponentsJSON] = Field(default_factory=list)
    model: ModelInfoJSON | None = None
    diag_labels: list[str] = Field(default_factory=list)


def _denied(
    authorization: str | None, token: str, metrics: ServiceMetrics, method: str
) -> JSONResponse | None:
    if authorized(authorization, token):
        return None
    metrics.request(method, "http", "unauthenticated", 0.0, "auth")
    return JSONResponse(status_code=401, content={"detail": UNAUTHENTICATED_MESSAGE})


async def _call(body: BaseModel | None, message_type, run, metrics: ServiceMetrics = OFF, method: str = ""):
    """Body -> proto -> ``run`` -> JSON; bad input -> 422 with the reason. The outcome is recorded in
    ``metrics`` (status, refusal reason, seconds) under ``method``."""
    timer, status, error = Timer(), "internal", None
    try:  # the body's size was checked by the Gatekeeper before it was read; the message's here
        message = json_format.ParseDict(body.model_dump(exclude_none=True), message_type()) if body else None
        out = to_json(await run(message))
        status = "ok"
        return out
    except (ValueError, json_format.ParseError) as exc:
        status, error = "invalid_argument", exc
        return JSONResponse(status_code=422, content={"detail": str(exc)})
    except Exception as exc:
        code = transient_status(exc)
        if code is None:
            raise
        status, error = code.name.lower(), exc
        detail = f"a reward model is busy or restarting; retry with backoff: {type(exc).__name__}: {exc}"
        return JSONResponse(
            status_code=HTTP_STATUS[code], content={"detail": detail}, headers={"Retry-After": "1"}
        )
    finally:
        metrics.request(method, "http", status, timer.seconds, reason_of(error, status))


def _json_safe(value):
    """A validation error's fields as JSON (inputs may hold NaN/Infinity, which JSON cannot carry)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics = OFF) -> None:
    """Every malformed body -> 422 with a JSON detail (FastAPI would give 500 for a validation error
    whose input holds NaN/Infinity, and 400 for a body too deeply nested to parse)."""

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        errors = [{k: e.get(k) for k in ("type", "loc", "msg", "input")} for e in exc.errors()]
        metrics.request(route_method(request.url.path), "http", "invalid_argument", 0.0, "invalid")
        return JSONResponse(status_code=422, content={"detail": _json_safe(errors)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 400 and request.method == "POST":  # FastAPI's "error parsing the body"
            metrics.request(route_method(request.url.path), "http", "invalid_argument", 0.0, "invalid")
            detail = f"the request body could not be parsed as JSON ({exc.detail}); send a JSON object"
            return JSONResponse(status_code=422, content={"detail": detail})
        return await http_exception_handler(request, exc)


def create_model_app(model, token: str) -> FastAPI:
    """FastAPI routes of one model application (``services.models.RewardModel``)."""
    app = FastAPIOffline(title=f"cxrl {model.kind} reward model", version="v1", static_url=DOCS_ASSETS)
    metrics = getattr(model, "metrics", OFF)
    install_error_handlers(app, metrics)
    limit = http_body_limit(model.args.max_request_bytes)
    app.add_middleware(Gatekeeper, token=token, max_body_bytes=limit, metrics=metrics)

    @app.post("/v1/predict", response_model=PredictResponseJSON)
    async def predict(body: PredictBody, authorization: str | None = Header(None)):
        """This model's components for a batch of images."""
        if (resp := _denied(authorization, token, metrics, "Predict")) is not None:
            return resp
        return await _call(body, pb.PredictRequest, model.predict_message, metrics, "Predict")

    @app.get("/v1/info", response_model=InfoResponseJSON)
    async def info(authorization: str | None = Header(None)):
        """The model's name, version and weights hash."""
        if (resp := _denied(authorization, token, metrics, "Info")) is not None:
            return resp
        return await _call(None, None, lambda _: model.info_message(), metrics, "Info")

    return app


def create_app(gateway, token: str, metrics: ServiceMetrics = OFF) -> FastAPI:
    """FastAPI routes over a ``services.gateway.Gateway``."""
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,  # /docs and /redoc load their scripts from the package, not a CDN
        title="cxrl reward gateway",
        version="v1",
        description="Comparative rewards (posture, diagnostic, CXR-CLIP consistency) for generated chest X-rays.",
    )
    install_error_handlers(app, metrics)
    app.add_middleware(
        Gatekeeper,
        token=token,
        max_body_bytes=http_body_limit(gateway.args.max_request_bytes),
        metrics=metrics,
    )

    @app.post("/v1/score", response_model=ScoreResponseJSON)
    async def score(body: ScoreBody, authorization: str | None = Header(None)):
        """Score a batch: per-image components, anchor counterparts, weighted totals, models used."""
        if (resp := _denied(authorization, token, metrics, "Score")) is not None:
            return resp
        return await _call(body, pb.ScoreRequest, gateway.score_message, metrics, "Score")

    @app.get("/v1/info", response_model=InfoResponseJSON)
    async def info(authorization: str | None = Header(None)):
        """The models served (name, version, weights hash), default weights and request limits."""
        if (resp := _denied(authorization, token, metrics, "Info")) is not None:
            return resp
        return await _call(None, None, lambda _: gateway.info_message(), metrics, "Info")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app
