"""Reward contracts shared by the scorers, the RL loop and the services.

The RLCF combination follows the CXRL paper (Han et al., MICCAI 2024, Sec. 2.3):

    r = w_align * r_align(psi(x))
      + w_diag  * (acc(x) - acc(x_anchor))
      + w_cons  * (cos(Fv(x), Ft(y)) - cos(Fv(x_anchor), Ft(y)))

"Direct feedback" (the paper's w/o-RLCF ablation) drops the anchor terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from cxrl import imaging

REWARD_NAMES: tuple[str, ...] = ("align", "diag", "consist")
PAPER_WEIGHTS: dict[str, float] = {"align": 1.0, "diag": 10.0, "consist": 10.0}


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a model that produced a score: reported in every response."""

    name: str  # e.g. "posture-resnet18"
    version: str  # e.g. "default-world-v1" or the checkpoint file name
    weights_hash: str  # sha256 of the weights file(s), hex


@dataclass
class Components:
    """Per-image reward components of one image batch (policy or anchor). Absent = not computed."""

    psi: torch.Tensor | None = None  # [B, 5] (sx, sy, tx, ty, theta)
    r_align: torch.Tensor | None = None  # [B]
    diag_acc: torch.Tensor | None = None  # [B] in [0, 1]
    diag_probs: torch.Tensor | None = None  # [B, 18] calibrated: 0.5 = operating point
    consistency: torch.Tensor | None = None  # [B] cosine in [-1, 1]


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
    if rlcf and anchor is None and ({"diag", "consist"} & set(weights)):
        raise ValueError("comparative feedback (RLCF) needs anchor images; send them or use direct feedback")
    total = None
    for name, w in weights.items():
        term = _term(name, policy, anchor if rlcf else None)
        total = w * term if total is None else total + w * term
    return total


def _term(name: str, policy: Components, anchor: Components | None) -> torch.Tensor:
    if name == "align":
        return _need(policy.r_align, "r_align")
    attr = "diag_acc" if name == "diag" else "consistency"
    value = _need(getattr(policy, attr), attr)
    if anchor is None:
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
