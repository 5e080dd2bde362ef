"""gRPC client of the reward services; a ``RewardBackend`` the trainer can use in place of
in-process scorers (``grpc://host:9000``).

- deadlines on every call, bounded retries with exponential backoff (and jitter) on
  UNAVAILABLE (a replica restarting), DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED (the
  server's queue is full); other errors raise at once (INVALID_ARGUMENT as
  ``ValueError`` with the server's message); ``retries_used`` counts the retries made;
- message-size limits on the channel (send and receive), and batches split so each
  request fits both the client's limit and the server's (``Info``: max_request_bytes,
  max_batch_images); a policy image and its anchor always travel together;
- images travel as raw uint8 tensors by default (``cxrl.imaging.to_raw``);
- TLS with ``grpcs://host:port`` (or ``tls=TLS(...)``): the server's CA (system roots by default),
  a client certificate for mutual TLS, all from ``TLS.from_env`` (``CXRL_TLS_*``) for the trainer;
  a bearer token sent in clear text to a host beyond loopback is logged as a warning;
- a large batch goes as ``pipeline`` requests in flight at once, so encoding the next
  part overlaps the server scoring the previous one (the server micro-batches them).

Needs the generated stubs (``make protos``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import torch

from cxrl import imaging
from cxrl.infra.retry import call_with_retries
from cxrl.labels import XRV_PATHOLOGIES
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.reward.v1 import reward_pb2_grpc as pb_grpc
from cxrl.rewards.types import Components, ModelInfo, RewardResult

log = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
DTYPES = {"uint8": pb.DTYPE_UINT8, "float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16}
TOKEN_ENV = "CXRL_API_TOKEN"
MIN_PIPELINE_CHUNK = 16  # smaller batches go as one request


def _retryable(exc: BaseException) -> bool:
    """A replica restarting, a deadline passed or a full queue: worth another try."""
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE


class RewardServiceError(RuntimeError):
    """A reward call failed after its retries (or with a non-retryable status)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"reward service: {code.name}: {details}")
        self.code, self.details = code, details


def parse_target(url: str) -> str:
    """``grpc://host:port``, ``grpcs://host:port`` (TLS) or ``host:port`` -> ``host:port``.

    Several proxies of one service, ``grpc://IP:PORT,IP:PORT,...`` (IP addresses), become gRPC's
    ``ipv4:``/``ipv6:`` address list: the channel spreads calls over the proxies that answer and
    a retried call goes to the next one (client-side failover, docs/reliability.md)."""
    target = url.removeprefix("grpcs://").removeprefix("grpc://")
    parts = target.split(",")
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"reward server address {url!r} must look like grpc://HOST:PORT, grpcs://HOST:PORT or HOST:PORT "
                "(several proxies: grpc://IP:PORT,IP:PORT)"
            )
    if len(parts) == 1:
        return target
    versions = set()
    for part in parts:
        try:
            versions.add(ipaddress.ip_address(part.rpartition(":")[0].strip("[]")).version)
        except ValueError:
            raise ValueError(
                f"reward server address {url!r}: a list of proxies takes IP addresses "
                "(one name that resolves to several addresses works as HOST:PORT)"
            ) from None
    if len(versions) > 1:
        raise ValueError(f"reward server address {url!r}: IPv4 and IPv6 proxies cannot be mixed")
    return f"ipv{versions.pop()}:{target}"


@dataclass(frozen=True)
class TLS:
    """Transport security of the channel (PEM files)."""

    ca_cert: str | None = None  # CA that signed the server's certificate (None: the system's roots)
    client_cert: str | None = None  # this client's certificate, for servers that require mutual TLS
    client_key: str | None = None  # its private key
    server_name: str | None = None  # name to check the certificate against, if not the target's host

    @classmethod
    def from_env(cls) -> TLS:
        """From ``CXRL_TLS_CA``, ``CXRL_TLS_CERT``, ``CXRL_TLS_KEY`` and ``CXRL_TLS_SERVER_NAME``."""
        env = {
            k: os.environ.get(f"CXRL_TLS_{k.upper()}") or None for k in ("ca", "cert", "key", "server_name")
        }
        return cls(env["ca"], env["cert"], env["key"], env["server_name"])

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("mutual TLS needs both client_cert and client_key (CXRL_TLS_CERT, CXRL_TLS_KEY)")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise ValueError(f"TLS file {path} not found; give a PEM file")
    return Path(path).read_bytes()


def _is_loopback(target: str) -> bool:
    for address in target.removeprefix("ipv4:").removeprefix("ipv6:").split(","):
        host = address.rpartition(":")[0].strip("[]")
        try:
            if not (host == "localhost" or ipaddress.ip_address(host).is_loopback):
                return False
        except ValueError:
            return False
    return True


class RewardClient:
    """Scores image batches on the reward gateway (application ``reward``) over gRPC."""

    def __init__(
        self,
        target: str = "127.0.0.1:9000",
        token: str | None = None,
        weights: dict[str, float] | None = None,
        timeout_s: float = 300.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_message_bytes: int = 64 << 20,
        max_batch_images: int | None = None,
        dtype: str = "uint8",
        application: str = "reward",
        pipeline: int = 3,
        tls: TLS | None = None,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if retries < 0 or timeout_s <= 0 or max_message_bytes <= 0:
            raise ValueError("retries must be >= 0, timeout_s and max_message_bytes > 0")
        if tls is None and target.startswith("grpcs://"):
            tls = TLS.from_env()
        self.target = parse_target(target)
        self.token = os.environ.get(TOKEN_ENV, "") if token is None else token
        self.weights = dict(weights or {})
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.max_message_bytes = max_message_bytes
        self.max_batch_images = max_batch_images
        self.dtype = dtype
        self.application = application
        self.pipeline = pipeline  # requests of one batch in flight at once
        self.channel = _channel(self.target, tls, max_message_bytes)
        if self.token and tls is None and not _is_loopback(self.target):
            log.warning("the bearer token goes to %s in clear text; use grpcs:// (TLS)", self.target)
        self.rewards = pb_grpc.RewardServiceStub(self.channel)
        self.models = pb_grpc.ModelServiceStub(self.channel)
        self._server_info: pb.InfoResponse | None = None
        self.retries_used = 0  # retries made so far, over all calls (for metrics and tests)
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RewardClient:
        """``grpc://`` plain, ``grpcs://`` TLS (``TLS.from_env()`` unless ``tls`` is given)."""
        return cls(url, **kwargs)

    # -- calls -------------------------------------------------------------------------------
    def _metadata(self, application: str) -> list[tuple[str, str]]:
        md = [("application", application)]
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        return md

    def _call(self, method: Callable, request, application: str, future=None):
        """One RPC with a deadline and bounded, backed-off retries on transient statuses
        (:func:`cxrl.infra.retry.call_with_retries`).

        ``future`` (from ``method.future``) is the first attempt when the request is already in flight."""
        first = [future] if future is not None else []

        def attempt():
            if first:
                return first.pop().result()
            return method(request, timeout=self.timeout_s, metadata=self._metadata(application))

        try:
            response, _ = call_with_retries(
                attempt,
                self.retries,
                self.backoff_s,
                what="reward call",
                transient=_retryable,
                jitter=0.25,
                on_retry=self._count_retry,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(exc.details()) from None
            raise RewardServiceError(exc.code(), exc.details() or "") from None
        return response

    def _count_retry(self, _exc: BaseException) -> None:
        with self._lock:  # the trainer calls from several threads
            self.retries_used += 1

    def server_info(self) -> pb.InfoResponse:
        """The gateway's Info (models, default weights, limits); fetched once."""
        if self._server_info is None:
            self._server_info = self._call(self.rewards.Info, pb.InfoRequest(), self.application)
        return self._server_info

    def info(self) -> list[ModelInfo]:
        return [_model_info(m) for m in self.server_info().models]

    # -- scoring -----------------------------------------------------------------------------
    def _images(self, images: torch.Tensor, what: str = "images") -> pb.ImageBatch:
        try:
            data, shape, dtype = imaging.to_raw(images, self.dtype)  # validates: float [B,1,H,W] in [0,1]
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        return pb.ImageBatch(tensor=pb.Tensor(data=data, shape=shape, dtype=DTYPES[dtype]))

    def chunk_size(self, images: torch.Tensor, reports: Sequence[str], with_anchor: bool) -> int:
        """Most images per request that fit the message limits of both sides."""
        info = self.server_info()
        per = 2 if with_anchor else 1
        itemsize = {"uint8": 1, "float16": 2, "float32": 4}[self.dtype]
        longest = max((len(r.encode()) for r in reports), default=0)
        bytes_per_image = per * images[0].numel() * itemsize + longest + 64
        limit = min(self.max_message_bytes, info.max_request_bytes or self.max_message_bytes)
        n = max(1, (limit - 1024) // bytes_per_image)  # 1 KiB covers request id, weights, shapes
        caps = [c for c in (self.max_batch_images, (info.max_batch_images // per) or None) if c]
        return max(1, min([n, *caps]))

    def score(
        self,
        images: torch.Tensor,  # [B,1,H,W] float in [0,1]
        reports: list[str],
        anchor_images: torch.Tensor | None = None,  # [B,1,H,W]
    ) -> RewardResult:
        # values are validated once, by cxrl.imaging.to_raw while encoding
        if images.ndim != 4 or len(reports) != images.shape[0]:
            raise ValueError(
                f"got images of shape {list(images.shape)} and {len(reports)} reports; send one per image"
            )
        if anchor_images is not None and anchor_images.shape[:2] != images.shape[:2]:
            raise ValueError(
                f"got anchor images of shape {list(anchor_images.shape)} for images {list(images.shape)}"
            )
        b = images.shape[0]
        step = self.chunk_size(images, reports, anchor_images is not None)
        if self.pipeline > 1:  # several requests in flight: encoding one overlaps scoring another
            step = min(step, max(MIN_PIPELINE_CHUNK, -(-b // self.pipeline)))
        in_flight: deque = deque()
        parts = []
        for s in range(0, b, step):
            request = pb.ScoreRequest(
                request_id=f"{os.getpid()}-{time.monotonic_ns()}",
                images=self._images(images[s : s + step]),
                reports=reports[s : s + step],
                weights=self.weights,
            )
            if anchor_images is not None:
                request.anchor_images.CopyFrom(self._images(anchor_images[s : s + step], "anchor_images"))
            future = self.rewards.Score.future(
                request, timeout=self.timeout_s, metadata=self._metadata(self.application)
            )
            in_flight.append((request, future))
            if len(in_flight) >= max(1, self.pipeline):
                done_request, done_future = in_flight.popleft()
                parts.append(
                    self._call(self.rewards.Score, done_request, self.application, future=done_future)
                )
        while in_flight:
            request, future = in_flight.popleft()
            parts.append(self._call(self.rewards.Score, request, self.application, future=future))
        return decode_score_responses(parts)

    def predict(self, application: str, images: torch.Tensor, reports: list[str] | None = None) -> Components:
        """One model's components from its own application ("posture", "diagnostic", "consistency")."""
        reports = list(reports) if reports is not None else [""] * images.shape[0]
        step = self.chunk_size(images, reports, False)
        parts = []
        for s in range(0, images.shape[0], step):
            request = pb.PredictRequest(
                images=self._images(images[s : s + step]), reports=reports[s : s + step]
            )
            response = self._call(self.models.Predict, request, application)
            parts.append(decode_components(list(response.results), list(response.diag_labels)))
        return Components.concat(parts)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_components(items: Sequence[pb.Components], diag_labels: Sequence[str] = ()) -> Components:
    """Proto Components per image -> batched Components (a field only when every image has it).

    ``diag_probs`` comes back as ``[B,18]`` in XRV_PATHOLOGIES order from the response's
    ``diag_labels``; a label the model does not score (not sent) is NaN, the library's "no output".
    """
    out = Components()
    if not items:
        return out
    if all(len(c.psi) for c in items):
        out.psi = torch.tensor([list(c.psi) for c in items], dtype=torch.float32)  # [B,5]
    for name in ("r_align", "diag_acc", "consistency"):
        if all(c.HasField(name) for c in items):
            setattr(out, name, torch.tensor([getattr(c, name) for c in items], dtype=torch.float32))  # [B]
    if all(len(c.diag_probs) for c in items):
        sent = torch.tensor([list(c.diag_probs) for c in items], dtype=torch.float32)  # [B,K]
        out.diag_probs = _diag_columns(sent, list(diag_labels))  # [B,18]
    return out


def decode_score_responses(responses: Sequence[pb.ScoreResponse]) -> RewardResult:
    """One or more ScoreResponses (chunks of one batch, in order) -> RewardResult."""
    results = [r for resp in responses for r in resp.results]
    labels = list(responses[0].diag_labels) if responses else []
    policy = decode_components([r.policy for r in results], labels)
    comparative = all(resp.comparative for resp in responses)
    anchor = decode_components([r.anchor for r in results], labels) if comparative else None
    total = torch.tensor([r.total for r in results], dtype=torch.float32)  # [B]
    models = [_model_info(m) for m in responses[0].models] if responses else []
    return RewardResult(policy=policy, anchor=anchor, total=total, models=models)


def _model_info(m: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(m.name, m.version, m.weights_hash, tuple(m.unscored_labels))


def _diag_columns(sent: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """``[B,K]`` probabilities for ``labels`` -> ``[B,18]`` in XRV_PATHOLOGIES order, NaN where not sent."""
    if not labels or labels == list(XRV_PATHOLOGIES):
        return sent
    if len(labels) != sent.shape[1] or not set(labels) <= set(XRV_PATHOLOGIES):
        raise ValueError(f"diag_labels {labels} do not match {sent.shape[1]} diag_probs per image")
    out = torch.full((sent.shape[0], len(XRV_PATHOLOGIES)), float("nan"))
    out[:, [XRV_PATHOLOGIES.index(name) for name in labels]] = sent
    return out


def _channel(target: str, tls: TLS | None, max_message_bytes: int) -> grpc.Channel:
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # every address the target names or resolves to (several proxies, a name with several
        # records): calls go round-robin over the ones that answer, skipping those that do not
        ("grpc.lb_policy_name", "round_robin"),
    ]
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(target, tls.credentials(), options=options)
