"""One Ray Serve deployment per reward model: ``posture``, ``diagnostic``, ``consistency``.

Each application hosts one scorer (cxrl.rewards) behind a ``RewardModel``
deployment. The gateway calls ``score(images, reports)`` through a deployment
handle; callers that want one model use the ``ModelService`` RPCs (``Predict``,
``Info``) on the model's own application, or its HTTP routes (``services.http``). Requests are split into chunks of at
most ``max_batch_images`` and micro-batched across callers with ``@serve.batch``
(batch size counted in images), scored in a worker thread so the replica keeps
accepting requests, and cached per image in Redis when it is reachable.
"""

from __future__ import annotations

import asyncio
import logging

import torch
from pydantic import Field
from ray import serve

from cxrl.config import ConfigModel
from cxrl.infra.hashing import sha256_json
from cxrl.reports.labeler import labeler_version
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards import factory
from cxrl.rewards.consistency import check_reports
from cxrl.rewards.types import Components, ModelInfo, row_signature
from services import codec
from services.cache import ScoreCache, content_hash
from services.grpc_servicer import handle_rpc, parse, server_token
from services.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Kind = factory.ModelKind
DEPLOYMENT_NAMES: dict[str, str] = {
    "posture": "PostureModel",
    "diagnostic": "DiagnosticModel",
    "consistency": "ConsistencyModel",
}
USES_REPORTS = {"posture": False, "diagnostic": True, "consistency": True}


class ModelAppArgs(ConfigModel):
    """`args` of a model application in the serve config."""

    source: str = Field(
        "default", description="model source: default, random, checkpoint, ... (cxrl.rewards.factory)"
    )
    path: str | None = Field(None, description="checkpoint directory / weights file for non-default sources")
    weights: str | None = Field(
        None, description="torchxrayvision weights name (diagnostic, source torchxrayvision)"
    )
    tokenizer_dir: str | None = Field(
        None, description="local tokenizer directory (consistency, source cxr-clip)"
    )
    sha256: str | None = Field(
        None,
        description="pinned sha256 of a release file (torchxrayvision / cxr-clip), checked before reading",
    )
    seed: int = Field(0, description="seed of random-weight models")
    device: str = Field("cpu", description="torch device; 'cuda' when the replica has num_gpus")
    num_threads: int = Field(1, ge=1, description="torch intra-op threads per replica")
    max_batch_images: int = Field(
        64, ge=1, description="most images scored in one forward pass (serve.batch size)"
    )
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="how long a batch waits to fill")
    max_request_bytes: int = Field(
        64 << 20, ge=0, description="largest Predict request accepted (0 = no limit)"
    )
    max_request_images: int = Field(1024, ge=1, description="most images in one Predict request")
    max_image_pixels: int = Field(
        codec.Limits.max_image_pixels, ge=64, description="most pixels of one image, read from its header"
    )
    max_request_pixels: int = Field(
        codec.Limits.max_request_pixels, ge=64, description="most decoded pixels per Predict request"
    )
    max_report_chars: int = Field(codec.Limits.max_report_chars, ge=1, description="longest report text")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="lifetime of cached scores in Redis")


def models_config(kind: Kind, args: ModelAppArgs) -> factory.RewardModelsConfig:
    """The factory's config of the model ``args`` name as ``kind`` (validated there; the other two
    models keep their defaults and are not built)."""
    model_args = {"source": args.source, "path": args.path}
    if args.weights is not None:
        model_args["weights"] = args.weights
    if args.tokenizer_dir is not None:
        model_args["tokenizer_dir"] = args.tokenizer_dir
    if args.sha256 is not None and kind != "posture":
        model_args["sha256"] = args.sha256
    return factory.RewardModelsConfig(**{kind: model_args}, device=args.device, seed=args.seed)


def build_scorer(kind: Kind, args: ModelAppArgs):
    """The scorer of ``kind`` from the app args, chosen as everywhere (cxrl.rewards.factory.build_scorer)."""
    return factory.build_scorer(kind, models_config(kind, args))


def _batch_images(items: list[tuple[torch.Tensor, list[str]]]) -> int:
    return sum(int(images.shape[0]) for images, _ in items)


def cache_salt(kind: str, scorer) -> str:
    """What a model's cached scores depend on besides its weights: the labeler that reads the
    reports (diagnostic accuracy) or the tokenizer's vocabulary (consistency)."""
    if kind == "diagnostic":
        return "labeler-" + labeler_version()
    vocab = getattr(getattr(scorer, "tokenizer", None), "get_vocab", None)
    return "tokenizer-" + sha256_json(sorted(vocab().items()))[:16] if kind == "consistency" and vocab else ""


class ItemFailed:
    """A batch member's own failure, handed back to its caller alone (``serve.batch`` sets results,
    so an exception raised by the batch function would fail every caller batched with it)."""

    def __init__(self, exc: Exception):
        self.exc = exc


class ModelServer:
    """Serves one scorer: ``score`` for the gateway, ``Predict``/``Info`` over gRPC, HTTP routes.

    A plain class (testable without Ray); ``RewardModel`` below is its Serve deployment."""

    def __init__(self, kind: str, args: dict | None = None):
        self.kind = kind
        self.args = ModelAppArgs(**(args or {}))
        torch.set_num_threads(self.args.num_threads)
        self.scorer = build_scorer(kind, self.args)
        self.info = self.scorer.info
        self.cache = ScoreCache(ttl_s=self.args.cache_ttl_s, salt=cache_salt(kind, self.scorer))
        self.row_signature = row_signature(self._run(torch.zeros(1, 1, 64, 64), ["No finding."]).to_rows()[0])
        self.token = server_token()
        self.metrics = ServiceMetrics()
        self._score_batch.set_max_batch_size(self.args.max_batch_images)
        self._score_batch.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        log.info("%s model ready: %s %s", kind, self.info.name, self.info.version)

    def _run(self, images: torch.Tensor, reports: list[str]) -> Components:
        if self.kind == "posture":
            return self.scorer(images)
        return self.scorer(images, reports)

    @property
    def limits(self) -> codec.Limits:
        a = self.args
        return codec.Limits(
            a.max_request_bytes,
            a.max_request_images,
            a.max_image_pixels,
            a.max_request_pixels,
            a.max_report_chars,
        )

    def check_items(self, images: torch.Tensor, reports: list[str]) -> None:
        """Every per-item check, run for one caller before its items join a shared batch."""
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[0] == 0:
            raise ValueError(f"expected images [B,1,H,W] with B >= 1, got {list(images.shape)}")
        if len(reports) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(reports)} reports; send one per image")
        codec.check_report_lengths(reports, self.args.max_report_chars)
        if self.kind == "consistency":
            try:
                check_reports(reports)
            except ValueError as exc:
                raise codec.Refused("report", str(exc)) from None

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, batch_size_fn=_batch_images)
    async def _score_batch(
        self, items: list[tuple[torch.Tensor, list[str]]]
    ) -> list[Components | ItemFailed]:
        """Score callers' chunks together; chunks of different image sizes run as separate passes.
        A pass that fails is run again per caller, so a failure reaches only the caller it belongs to."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for n, (images, _) in enumerate(items):
            groups.setdefault(tuple(images.shape[1:]), []).append(n)
        results: list[Components | ItemFailed | None] = [None] * len(items)
        for members in groups.values():
            images = torch.cat([items[n][0] for n in members])  # [sum B,1,H,W]
            reports = [r for n in members for r in items[n][1]]
            self.metrics.batch(self.kind, images.shape[0])
            try:
                out = await asyncio.to_thread(self._run, images, reports)
            except Exception:
                if len(members) == 1:
                    raise
                for n in members:
                    results[n] = await self._score_alone(*items[n])
                continue
            for n, part in zip(members, out.split([items[n][0].shape[0] for n in members]), strict=True):
                results[n] = part
        return results

    async def _score_alone(self, images: torch.Tensor, reports: list[str]) -> Components | ItemFailed:
        try:
            return await asyncio.to_thread(self._run, images, reports)
        except Exception as exc:  # this caller's own failure
            log.warning("a batched request failed on its own: %s: %s", type(exc).__name__, exc)
            return ItemFailed(exc)

    async def _score_uncached(self, images: torch.Tensor, reports: list[str]) -> Components:
        chunks = [
            self._score_batch(
                (images[s : s + self.args.max_batch_images], reports[s : s + self.args.max_batch_images])
            )
            for s in range(0, images.shape[0], self.args.max_batch_images)
        ]
        parts = await asyncio.gather(*chunks)
        for part in parts:
            if isinstance(part, ItemFailed):
                raise part.exc
        return Components.concat(parts)

    async def score(self, images: torch.Tensor, reports: list[str]) -> tuple[Components, ModelInfo]:
        """images ``[B,1,H,W]`` (one size; float in [0,1] or uint8), B reports -> (Components ``[B,...]``, model)."""
        return await self._score(images, reports), self.info

    async def _score(self, images: torch.Tensor, reports: list[str]) -> Components:
        with self.metrics.model_call(self.kind):
            out = await self._score_checked(images, reports)
        self.metrics.scored(self.kind, images.shape[0])
        return out

    async def _score_checked(self, images: torch.Tensor, reports: list[str]) -> Components:
        self.check_items(images, reports)
        images = codec.as_float(images)  # [B,1,H,W] float
        if not self.cache.enabled:
            return await self._score_uncached(images, reports)
        keys = [
            content_hash(img, rep if USES_REPORTS[self.kind] else None)
            for img, rep in zip(images, reports, strict=True)
        ]
        cached = await asyncio.to_thread(self.cache.get, self.info, keys, self.row_signature)
        miss = [i for i, row in enumerate(cached) if row is None]
        self.metrics.cache(self.kind, len(cached) - len(miss), len(miss))
        if not miss:
            return Components.from_rows(cached)
        fresh = await self._score_uncached(images[miss], [reports[i] for i in miss])
        fresh_rows = fresh.to_rows()
        await asyncio.to_thread(self.cache.put, self.info, [keys[i] for i in miss], fresh_rows)
        for j, i in enumerate(miss):
            cached[i] = fresh_rows[j]
        return Components.from_rows(cached)

    def model_info(self):
        return self.info

    async def predict_message(self, request: pb.PredictRequest) -> pb.PredictResponse:
        images, reports = codec.decode_predict_request(request, USES_REPORTS[self.kind], self.limits)
        out = await self._score(images, reports)
        return codec.encode_predict_response(request.request_id, out, images.shape[0], self.info)

    async def info_message(self) -> pb.InfoResponse:
        return pb.InfoResponse(
            models=[codec.encode_model_info(self.info)],
            diag_labels=codec.diag_columns([self.info])[1] if self.kind == "diagnostic" else (),
            max_request_bytes=self.args.max_request_bytes,
            max_batch_images=0,
        )

    def __serve_build_asgi_app__(self):
        from services.http import create_model_app

        return create_model_app(self, self.token)

    async def Predict(self, request: pb.PredictRequest | bytes, grpc_context=None) -> pb.PredictResponse:
        return await handle_rpc(
            grpc_context,
            self.token,
            lambda: self.predict_message(parse(pb.PredictRequest, request)),
            pb.PredictResponse(),
            self.metrics,
            "Predict",
        )

    async def Info(self, request: pb.InfoRequest | bytes, grpc_context=None) -> pb.InfoResponse:
        async def work() -> pb.InfoResponse:
            parse(pb.InfoRequest, request)
            return await self.info_message()

        return await handle_rpc(grpc_context, self.token, work, pb.InfoResponse(), self.metrics, "Info")


RewardModel = serve.deployment(max_ongoing_requests=64)(serve.ingress()(ModelServer))


def model_app(kind: str, args: dict | None) -> serve.Application:
    ModelAppArgs(**(args or {}))  # fail at build time on bad args
    return RewardModel.options(name=DEPLOYMENT_NAMES[kind]).bind(kind, args or {})


def posture_app(args: dict) -> serve.Application:
    """Serve-config builder: ``import_path: services.models:posture_app``."""
    return model_app("posture", args)


def diagnostic_app(args: dict) -> serve.Application:
    return model_app("diagnostic", args)


def consistency_app(args: dict) -> serve.Application:
    return model_app("consistency", args)
