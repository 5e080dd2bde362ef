"""Reward contracts shared by the scorers, the RL loop and the services.

The RLCF combination follows the CXRL paper (Han et al., MICCAI 2024, Sec. 2.3):

    r = w_align * r_align(psi(x))
      + w_diag  * (acc(x) - acc(x_anchor))
      + w_cons  * (cos(Fv(x), Ft(y)) - cos(Fv(x_anchor), Ft(y)))

"Direct feedback" (the paper's w/o-RLCF ablation) drops the anchor terms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from cxrl import imaging
from cxrl.labels import XRV_PATHOLOGIES


@dataclass(frozen=True)
class RewardName:
    """The names of one reward, from the config to the README: the one table is :data:`REWARDS`."""

    key: str  # weights key: configs, requests, the proto's weight map, reproduce's variant slugs
    component: (
        str  # Components field; history/TensorBoard/Redis metrics policy/<component>, anchor/<component>
    )
    model: str  # the reward model computing it (its scorer and its service deployment)
    eval_metric: str  # its held-out metric in eval.json, tables.json, the report and the README
    comparative: bool  # under RLCF a difference to the anchor's value (Eq. 2)


# The one name table of the rewards. The consistency reward keeps two historical names: the
# component (and the proto field) `consistency`, the evaluation metric `clip_similarity` (the
# paper's "CXR-CLIP similarity" column); every other name of it is one of these.
REWARDS: tuple[RewardName, ...] = (
    RewardName("align", "r_align", "posture", "r_align", comparative=False),
    RewardName("diag", "diag_acc", "diagnostic", "diag_acc", comparative=True),
    RewardName("consist", "consistency", "consistency", "clip_similarity", comparative=True),
)
REWARD_NAMES: tuple[str, ...] = tuple(r.key for r in REWARDS)
COMPONENT_OF: dict[str, str] = {r.key: r.component for r in REWARDS}  # weights key -> Components field
COMPARATIVE: frozenset[str] = frozenset(r.key for r in REWARDS if r.comparative)
PAPER_WEIGHTS: dict[str, float] = {"align": 1.0, "diag": 10.0, "consist": 10.0}


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a model that produced a score: reported in every response."""

    name: str  # e.g. "posture-resnet18"
    version: str  # e.g. "default-world-v1" or the checkpoint file name
    weights_hash: str  # sha256 of the weights file(s), hex
    unscored_labels: tuple[str, ...] = ()  # diagnostic labels the model has no calibrated output for


COMPONENT_FIELDS: tuple[str, ...] = ("psi", "r_align", "diag_acc", "diag_probs", "consistency")
VECTOR_FIELDS: frozenset[str] = frozenset({"psi", "diag_probs"})  # [B, K]; the others are [B]

Row = dict[
    str, float | list[float]
]  # one image's components as JSON: a float per [B] field, a list per [B, K]
RowSignature = dict[str, int]  # a row's fields -> vector length (0 for a [B] field)
ROW_WIDTHS: dict[str, int] = {"psi": 5, "diag_probs": len(XRV_PATHOLOGIES)}  # lengths of the [B, K] fields


def row_signature(row: Row) -> RowSignature:
    """The shape of one row as :meth:`Components.to_rows` writes it."""
    return {k: len(v) if isinstance(v, list) else 0 for k, v in row.items()}


def _numbers(items: object, nan_ok: bool = False) -> bool:
    """A list of finite numbers (NaN allowed where ``nan_ok``: labels a classifier does not score)."""
    return isinstance(items, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and (math.isfinite(x) or (nan_ok and x != x))
        for x in items
    )


def valid_row(value: Row | str | bytes, like: RowSignature | None = None) -> Row | None:
    """A stored component row (JSON text or parsed), or None when it is not a usable one.

    The one check of every store of rows (the services' score cache, the anchor stores in memory, on
    disk and in Redis): a non-empty object of known component names, a finite number per [B] field,
    a list of :data:`ROW_WIDTHS` finite numbers per [B, K] field (``diag_probs`` is NaN for the labels
    its classifier does not score, :mod:`cxrl.rewards.diagnostic`); with ``like`` exactly its fields
    and lengths. NaN or infinity elsewhere, booleans, strings, a field too many or a number short: None.
    """
    try:
        row = json.loads(value) if isinstance(value, str | bytes | bytearray) else value
    except (ValueError, TypeError):
        return None
    if not isinstance(row, dict) or not row or not set(row) <= set(COMPONENT_FIELDS):
        return None
    if like is not None and set(row) != set(like):
        return None
    for name, v in row.items():
        width = ROW_WIDTHS.get(name, 0) if name in VECTOR_FIELDS else 0
        if like is not None:
            width = like[name]
        if bool(width) != (name in VECTOR_FIELDS) or not _numbers(v if width else [v], name == "diag_probs"):
            return None
        if width and len(v) != width:
            return None
    return row


@dataclass
class Components:
    """Per-image reward components of one image batch (policy or anchor). Absent = not computed.

    The batch operations keep every present field's rows aligned: :meth:`concat`, :meth:`take`,
    :meth:`split`, :meth:`merge` (fields of different models over the same rows), and the one JSON
    row format of the score cache and the anchor cache, :meth:`to_rows` / :meth:`from_rows`
    (float32 values survive the round trip exactly).
    """

    psi: torch.Tensor | None = None  # [B, 5] (sx, sy, tx, ty, theta)
    r_align: torch.Tensor | None = None  # [B]
    diag_acc: torch.Tensor | None = None  # [B] in [0, 1]
    diag_probs: torch.Tensor | None = None  # [B, 18] calibrated: 0.5 = operating point
    consistency: torch.Tensor | None = None  # [B] cosine in [-1, 1]

    def present(self) -> dict[str, torch.Tensor]:
        """The computed fields, by name, in field order."""
        return {name: value for name in COMPONENT_FIELDS if (value := getattr(self, name)) is not None}

    @property
    def num_rows(self) -> int:
        """Images in the batch (0 when nothing was computed); fields that disagree are an error."""
        sizes = {name: int(value.shape[0]) for name, value in self.present().items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"components disagree on the number of images: {sizes}")
        return next(iter(sizes.values()), 0)

    @classmethod
    def concat(cls, parts: Sequence[Components]) -> Components:
        """Batches one after another; a field is kept only when every part has it."""
        out = cls()
        for name in COMPONENT_FIELDS:
            values = [getattr(p, name) for p in parts]
            if values and all(v is not None for v in values):
                setattr(out, name, torch.cat(values, dim=0))
        return out

    def take(self, index: slice | Sequence[int] | torch.Tensor) -> Components:
        """Rows ``index`` (a slice, or positions in any order, repeats allowed) of every present field."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return Components(**{name: value[index] for name, value in self.present().items()})

    def split(self, sizes: Sequence[int]) -> list[Components]:
        """Consecutive parts of ``sizes`` rows; the sizes must add up to the batch."""
        if sum(sizes) != self.num_rows:
            raise ValueError(f"split sizes {list(sizes)} add up to {sum(sizes)}, not {self.num_rows} rows")
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [self.take(slice(s, s + n)) for s, n in zip(starts, sizes, strict=True)]

    @classmethod
    def merge(cls, parts: Sequence[Components]) -> Components:
        """Union of the fields of several models' Components over the same rows (later parts win)."""
        out = cls()
        for part in parts:
            for name, value in part.present().items():
                setattr(out, name, value)
        return out

    def to_rows(self) -> list[Row]:
        """One JSON-able dict per image: ``{"r_align": -0.1, "psi": [1.0, ...], ...}``, computed fields only."""
        n = self.num_rows
        rows: list[Row] = [{} for _ in range(n)]
        for name, value in self.present().items():
            for row, v in zip(rows, value.detach().to("cpu", torch.float32).tolist(), strict=True):
                row[name] = v
        return rows

    @classmethod
    def from_rows(cls, rows: Sequence[Row]) -> Components:
        """Inverse of :meth:`to_rows`; a field is set only when every row has it."""
        out = cls()
        unknown = {k for r in rows for k in r} - set(COMPONENT_FIELDS)
        if unknown:
            raise ValueError(f"unknown component names {sorted(unknown)}; known: {COMPONENT_FIELDS}")
        for name in COMPONENT_FIELDS:
            if rows and all(name in r for r in rows):
                try:
                    value = torch.tensor([r[name] for r in rows], dtype=torch.float32)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"component {name!r} has rows of different shapes: {exc}") from None
                want = 2 if name in VECTOR_FIELDS else 1
                if value.ndim != want:
                    kind = "a list of numbers" if want == 2 else "a number"
                    raise ValueError(
                        f"component {name!r} must be {kind} per row, got shape {list(value.shape)}"
                    )
                setattr(out, name, value)
        return out


@dataclass
class RewardResult:
    """What a reward backend returns for a batch."""

    policy: Components
    anchor: Components | None
    total: torch.Tensor  # [B] weighted total
    models: list[ModelInfo] = field(default_factory=list)


def r_align(psi: torch.Tensor) -> torch.Tensor:
    """Posture reward from psi ``[B,5]`` = (sx, sy, tx, ty, theta[rad]) -> ``[B]``.

    ``-(max(|sx-1|, |sy-1|) + |theta|/(2 pi) + sqrt(tx^2 + ty^2))``
    """
    if psi.ndim != 2 or psi.shape[1] != 5:
        raise ValueError(f"psi must be [B, 5] (sx, sy, tx, ty, theta), got {list(psi.shape)}")
    sx, sy, tx, ty, theta = psi.unbind(dim=1)
    scale = torch.maximum((sx - 1).abs(), (sy - 1).abs())
    return -(scale + theta.abs() / (2 * math.pi) + torch.sqrt(tx**2 + ty**2))


def check_images_reports(images: torch.Tensor, reports) -> None:
    """Validate an image batch (cxrl.imaging conventions) and that it has one report per image."""
    imaging.validate(images)
    if len(reports) != images.shape[0]:
        raise ValueError(
            f"got {images.shape[0]} images but {len(reports)} reports; send one report per image"
        )


def combine(
    policy: Components,
    anchor: Components | None,
    weights: dict[str, float],
    rlcf: bool = True,
) -> torch.Tensor:
    """Weighted total per image. ``weights`` keys are a subset of REWARD_NAMES.

    With ``rlcf`` the diagnostic and consistency terms are differences to the anchor
    (which must then be given); without it they are the policy's own values.
    """
    unknown = set(weights) - set(REWARD_NAMES)
    if unknown:
        raise ValueError(f"unknown reward names {sorted(unknown)}; use {REWARD_NAMES}")
    if not weights:
        raise ValueError("no rewards selected; give at least one of align, diag, consist")
    if rlcf and anchor is None and (COMPARATIVE & set(weights)):
        raise ValueError("comparative feedback (RLCF) needs anchor images; send them or use direct feedback")
    total = None
    for name, w in weights.items():
        term = _term(name, policy, anchor if rlcf else None)
        total = w * term if total is None else total + w * term
    return total


def _term(name: str, policy: Components, anchor: Components | None) -> torch.Tensor:
    attr = COMPONENT_OF[name]
    value = _need(getattr(policy, attr), attr)
    if name not in COMPARATIVE or anchor is None:
        return value
    return value - _need(getattr(anchor, attr), f"anchor {attr}")


def _need(value: torch.Tensor | None, what: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"reward component {what} was not computed but its weight is set")
    return value


class RewardBackend(Protocol):
    """Anything that scores image batches: in-process scorers or the gRPC gateway."""

    def score(
        self,
        images: torch.Tensor,  # [B,1,H,W] float in [0,1]
        reports: list[str],  # one per image
        anchor_images: torch.Tensor | None = None,  # [B,1,H,W], same prompts, same noise
    ) -> RewardResult: ...

    def info(self) -> list[ModelInfo]: ...
