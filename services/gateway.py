"""The ``reward`` application: the comparative-reward gateway (CXRL, Han et al., MICCAI 2024, Sec. 2.3).

Fans a batch out to the ``posture``, ``diagnostic`` and ``consistency``
applications through deployment handles (in parallel; the anchor images travel
in the same call as the policy images), then combines the components with
``cxrl.rewards.types.combine``:

    r = w_align*r_align + w_diag*(acc(x) - acc(x_anchor)) + w_consist*(cos(x,y) - cos(x_anchor,y))

Without anchor images the anchor terms are dropped (direct feedback). As in
``cxrl.rewards.backend.InProcessRewards``, anchors get only the comparative
components (diagnostic, consistency). Served over gRPC (``RewardService``) and
HTTP/JSON (``services.http``) by the same replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import ray
import torch
from pydantic import Field, field_validator
from ray import serve

from cxrl.config import ConfigModel
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.consistency import check_reports
from cxrl.rewards.types import (
    PAPER_WEIGHTS,
    REWARD_NAMES,
    REWARDS,
    Components,
    ModelInfo,
    RewardResult,
    combine,
)
from services import codec
from services.grpc_servicer import handle_rpc, parse, server_token
from services.metrics import ServiceMetrics
from services.models import DEPLOYMENT_NAMES

log = logging.getLogger(__name__)

REWARD_MODEL: dict[str, str] = {r.key: r.model for r in REWARDS}  # weights key -> model deployment
COMPARATIVE: frozenset[str] = frozenset(r.model for r in REWARDS if r.comparative)  # models scoring anchors


class GatewayArgs(ConfigModel):
    """`args` of the reward application in the serve config."""

    weights: dict[str, float] = Field(
        default_factory=lambda: dict(PAPER_WEIGHTS), description="default weights when a request gives none"
    )
    apps: dict[str, str] = Field(
        default_factory=lambda: {k: k for k in DEPLOYMENT_NAMES},
        description="application name of each model (posture, diagnostic, consistency)",
    )
    max_request_bytes: int = Field(64 << 20, ge=0, description="largest request accepted (0 = no limit)")
    max_batch_images: int = Field(1024, ge=1, description="most images (policy + anchor) in one request")
    max_image_pixels: int = Field(
        codec.Limits.max_image_pixels, ge=64, description="most pixels of one image, read from its header"
    )
    max_request_pixels: int = Field(
        codec.Limits.max_request_pixels,
        ge=64,
        description="most decoded pixels per request (policy + anchor)",
    )
    max_report_chars: int = Field(codec.Limits.max_report_chars, ge=1, description="longest report text")

    @property
    def limits(self) -> codec.Limits:
        return codec.Limits(
            self.max_request_bytes,
            self.max_batch_images,
            self.max_image_pixels,
            self.max_request_pixels,
            self.max_report_chars,
        )

    @field_validator("apps")
    @classmethod
    def _known_models(cls, apps: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(apps) - set(DEPLOYMENT_NAMES))
        if unknown:
            raise ValueError(f"unknown models {unknown} in apps; use {sorted(DEPLOYMENT_NAMES)}")
        return apps


class Gateway:
    """The gateway's work on decoded tensors; the deployment below adds transport."""

    def __init__(
        self, args: GatewayArgs, get_handle: Callable[[str], Any], share: Callable[[Any], Any] | None = None
    ):
        unknown = set(args.weights) - set(REWARD_NAMES)
        if unknown:
            raise ValueError(f"unknown reward names {sorted(unknown)} in gateway weights; use {REWARD_NAMES}")
        self.args = args
        self.get_handle = get_handle  # kind -> handle with .score / .model_info (a DeploymentHandle)
        self.share = share or (lambda x: x)  # tensor -> argument several handle calls can share (ray.put)

    def _shared(self, images: torch.Tensor, readers: int):
        return self.share(images) if readers > 1 else images

    def handle(self, kind: str):
        if kind not in self.args.apps:
            raise ValueError(f"this server has no {kind} model; drop its reward from the weights")
        return self.get_handle(kind)

    def check(self, inputs: codec.ScoreInputs) -> None:
        n = inputs.images.shape[0] * (1 if inputs.anchor_images is None else 2)
        if n > self.args.max_batch_images:
            raise codec.Refused(
                "images",
                f"{n} images (policy + anchor) in one request; the server takes at most "
                f"{self.args.max_batch_images}: split the batch (cxrl.client does this automatically)",
            )

    async def score(self, inputs: codec.ScoreInputs) -> RewardResult:
        self.check(inputs)
        images, reports, anchors = inputs.images, inputs.reports, inputs.anchor_images
        b = images.shape[0]
        kinds = [REWARD_MODEL[name] for name in inputs.weights]
        same_size = anchors is None or tuple(anchors.shape[2:]) == tuple(images.shape[2:])
        paired = [k for k in kinds if anchors is not None and k in COMPARATIVE]
        alone = [k for k in kinds if k not in paired]
        # one copy of each batch for every model that reads it (the deployment puts it in the object store once)
        both = self._shared(_cat_images(images, anchors), len(paired)) if paired and same_size else None
        single = self._shared(images, len(alone)) if alone else None
        calls = []
        for kind in kinds:
            if kind not in paired:
                calls.append(self.handle(kind).score.remote(single, reports))
            elif same_size:
                calls.append(self.handle(kind).score.remote(both, reports * 2))  # [2B,1,H,W]
            else:  # different sizes cannot share a tensor: two calls
                calls.append(self._two_calls(kind, images, anchors, reports))
        outputs = await asyncio.gather(*calls)
        policy_parts, anchor_parts, models = [], [], []
        for kind, (out, info) in zip(kinds, outputs, strict=True):
            models.append(info)
            if kind in paired:  # [2B] rows: policy then anchors
                p, a = out.split([b, b])
                policy_parts.append(p)
                anchor_parts.append(a)
            else:
                policy_parts.append(out)
        policy = Components.merge(policy_parts)
        anchor = Components.merge(anchor_parts) if anchor_parts else None
        total = combine(policy, anchor, inputs.weights, rlcf=anchor is not None)  # [B]
        return RewardResult(policy=policy, anchor=anchor, total=total, models=models)

    async def _two_calls(self, kind, images, anchors, reports) -> tuple[Components, ModelInfo]:
        (p, info), (a, _) = await asyncio.gather(
            self.handle(kind).score.remote(images, reports), self.handle(kind).score.remote(anchors, reports)
        )
        return Components.concat([p, a]), info

    async def info(self) -> list[ModelInfo]:
        return list(await asyncio.gather(*[self.handle(k).model_info.remote() for k in self.args.apps]))

    async def score_message(self, request: pb.ScoreRequest) -> pb.ScoreResponse:
        inputs = codec.decode_score_request(request, self.args.weights, self.args.limits)
        if "consist" in inputs.weights:  # per-item checks here, never inside a model's shared batch
            check_report_texts(inputs.reports)
        result = await self.score(inputs)
        return codec.encode_score_response(request.request_id, result, inputs.weights)

    async def info_message(self) -> pb.InfoResponse:
        infos = await self.info()
        return pb.InfoResponse(
            models=[codec.encode_model_info(m) for m in infos],
            default_weights=self.args.weights,
            diag_labels=codec.diag_columns(infos)[1],
            max_request_bytes=self.args.max_request_bytes,
            max_batch_images=self.args.max_batch_images,
        )


def check_report_texts(reports: list[str]) -> None:
    """The consistency model's report checks (non-empty text), refused with reason ``report``."""
    try:
        check_reports(reports)
    except ValueError as exc:
        raise codec.Refused("report", str(exc)) from None


def _cat_images(images: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Policy and anchor images in one batch (uint8 stays uint8 when both are)."""
    if images.dtype != anchors.dtype:
        images, anchors = codec.as_float(images), codec.as_float(anchors)
    return torch.cat([images, anchors])  # [2B,1,H,W]


@serve.deployment(max_ongoing_requests=32)
@serve.ingress()
class RewardGateway:
    """Ingress of the ``reward`` application: ``RewardService`` RPCs and the FastAPI routes."""

    def __init__(self, args: dict | None = None):
        self.args = GatewayArgs(**(args or {}))
        self._handles: dict = {}
        self.gateway = Gateway(self.args, self._handle, share=ray.put)
        self.token = server_token()
        self.metrics = ServiceMetrics()

    def _handle(self, kind: str):
        # looked up on first use: the model applications may deploy after the gateway
        if kind not in self._handles:
            app = self.args.apps[kind]
            self._handles[kind] = serve.get_deployment_handle(DEPLOYMENT_NAMES[kind], app_name=app)
        return self._handles[kind]

    def __serve_build_asgi_app__(self):
        from services.http import create_app

        return create_app(self.gateway, self.token, self.metrics)

    async def Score(self, request: pb.ScoreRequest | bytes, grpc_context=None) -> pb.ScoreResponse:
        return await handle_rpc(
            grpc_context,
            self.token,
            lambda: self.gateway.score_message(parse(pb.ScoreRequest, request)),
            pb.ScoreResponse(),
            self.metrics,
            "Score",
        )

    async def Info(self, request: pb.InfoRequest | bytes, grpc_context=None) -> pb.InfoResponse:
        async def work() -> pb.InfoResponse:
            parse(pb.InfoRequest, request)
            return await self.gateway.info_message()

        return await handle_rpc(grpc_context, self.token, work, pb.InfoResponse(), self.metrics, "Info")


def reward_app(args: dict) -> serve.Application:
    """Serve-config builder: ``import_path: services.gateway:reward_app``."""
    GatewayArgs(**(args or {}))  # fail at build time on bad args
    return RewardGateway.bind(args or {})
