"""HTTP/JSON ingress of the ``reward`` application (FastAPI; OpenAPI docs at ``/docs``).

The JSON bodies are the proto messages' JSON mapping (field names as in
``reward.proto``, bytes as base64), so HTTP and gRPC share one decoder and give
identical results. Bad input -> 422 with a message; with ``CXRL_API_TOKEN`` set,
a missing or wrong ``Authorization: Bearer`` header -> 401.
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel, Field

from cxrl.reward.v1 import reward_pb2 as pb
from services.grpc_servicer import UNAUTHENTICATED_MESSAGE, authorized


class TensorJSON(BaseModel):
    data: str = Field("", description="base64 of the C-order tensor bytes")
    shape: list[int] = Field(default_factory=list, description="[B, H, W] or [B, 1, H, W]")
    dtype: Literal["DTYPE_UINT8", "DTYPE_FLOAT32", "DTYPE_FLOAT16"] = Field(
        "DTYPE_UINT8", description="uint8 (0..255) or float in [0, 1]"
    )


class EncodedJSON(BaseModel):
    images: list[str] = Field(
        default_factory=list, description="base64 PNG (or JPEG) blobs, one per image, all one size"
    )


class ImageBatchJSON(BaseModel):
    tensor: TensorJSON | None = Field(None, description="raw tensor form")
    encoded: EncodedJSON | None = Field(None, description="encoded-image form")


class ScoreBody(BaseModel):
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


class PredictBody(BaseModel):
    request_id: str = Field("", description="echoed back")
    images: ImageBatchJSON = Field(description="images to score")
    reports: list[str] = Field(default_factory=list, description="one report per image (posture: any text)")


class PredictResponseJSON(BaseModel):
    request_id: str = ""
    results: list[ComponentsJSON] = Field(default_factory=list)
    model: ModelInfoJSON | None = None
    diag_labels: list[str] = Field(default_factory=list)


def _denied(authorization: str | None, token: str) -> JSONResponse | None:
    if authorized(authorization, token):
        return None
    return JSONResponse(status_code=401, content={"detail": UNAUTHENTICATED_MESSAGE})


async def _call(body: BaseModel, request: Request, message_type, run, limit: int):
    """Body -> proto -> ``run`` -> JSON; bad input -> 422 with the reason."""
    try:
        # base64 inflates by 4/3: a body this large cannot decode under the limit
        if limit and int(request.headers.get("content-length", 0)) > 2 * limit:
            raise ValueError(
                f"request body is over twice the server's limit of {limit} bytes; split the batch"
            )
        message = json_format.ParseDict(body.model_dump(exclude_none=True), message_type())
        return to_json(await run(message))
    except (ValueError, json_format.ParseError) as exc:
        return JSONResponse(status_code=422, content={"detail": str(exc)})


def create_model_app(model, token: str) -> FastAPI:
    """FastAPI routes of one model application (``services.models.RewardModel``)."""
    app = FastAPI(title=f"cxrl {model.kind} reward model", version="v1")

    @app.post("/v1/predict", response_model=PredictResponseJSON)
    async def predict(body: PredictBody, request: Request, authorization: str | None = Header(None)):
        """This model's components for a batch of images."""
        if (resp := _denied(authorization, token)) is not None:
            return resp
        return await _call(
            body, request, pb.PredictRequest, model.predict_message, model.args.max_request_bytes
        )

    @app.get("/v1/info", response_model=InfoResponseJSON)
    async def info(authorization: str | None = Header(None)):
        """The model's name, version and weights hash."""
        if (resp := _denied(authorization, token)) is not None:
            return resp
        return to_json(await model.info_message())

    return app


def create_app(gateway, token: str) -> FastAPI:
    """FastAPI routes over a ``services.gateway.Gateway``."""
    app = FastAPI(
        title="cxrl reward gateway",
        version="v1",
        description="Comparative rewards (posture, diagnostic, CXR-CLIP consistency) for generated chest X-rays.",
    )

    @app.post("/v1/score", response_model=ScoreResponseJSON)
    async def score(body: ScoreBody, request: Request, authorization: str | None = Header(None)):
        """Score a batch: per-image components, anchor counterparts, weighted totals, models used."""
        if (resp := _denied(authorization, token)) is not None:
            return resp
        return await _call(
            body, request, pb.ScoreRequest, gateway.score_message, gateway.args.max_request_bytes
        )

    @app.get("/v1/info", response_model=InfoResponseJSON)
    async def info(authorization: str | None = Header(None)):
        """The models served (name, version, weights hash), default weights and request limits."""
        if (resp := _denied(authorization, token)) is not None:
            return resp
        return to_json(await gateway.info_message())

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app
