"""In-process reward backend: runs the scorers and the RLCF combination (CXRL Sec. 2.3).

Policy images get every configured component; anchor images (RLCF) get the comparative
ones. ``combine`` forms ``1*r_align + 10*(acc - acc_anchor) + 10*(cos - cos_anchor)`` with the
paper's weights, or the policy's own values in direct-feedback mode.

The total is comparative exactly when the caller sends anchor images and a comparative reward has
a weight: the reward gateway's rule (``services.gateway``), so the two backends answer a call alike.
The epoch engine never sends anchor images (it keeps them in an anchor store and forms the RLCF
total itself, :func:`cxrl.rl.rlcf.score_chunk`), so any backend serves it as made.
"""

from __future__ import annotations

import torch

from cxrl import imaging
from cxrl.rewards.consistency import ConsistencyScorer
from cxrl.rewards.diagnostic import DiagnosticScorer
from cxrl.rewards.posture import PostureScorer
from cxrl.rewards.types import (
    COMPARATIVE,
    PAPER_WEIGHTS,
    REWARD_NAMES,
    Components,
    ModelInfo,
    RewardResult,
    combine,
)


class InProcessRewards:
    """A RewardBackend that scores with scorers held in this process."""

    def __init__(
        self,
        posture: PostureScorer | None,
        diagnostic: DiagnosticScorer | None,
        consistency: ConsistencyScorer | None,
        weights: dict[str, float] | None = None,
        rlcf: bool | None = None,  # None: comparative when anchor images are sent; False: never; True: always
    ):
        self.weights = dict(PAPER_WEIGHTS if weights is None else weights)
        unknown = set(self.weights) - set(REWARD_NAMES)
        if unknown:
            raise ValueError(f"unknown reward names {sorted(unknown)}; use {REWARD_NAMES}")
        scorers = {"align": posture, "diag": diagnostic, "consist": consistency}
        missing = [name for name in self.weights if scorers[name] is None]
        if missing:
            raise ValueError(
                f"rewards {missing} have a weight but no scorer; give the scorer or drop the weight"
            )
        self.posture, self.diagnostic, self.consistency = posture, diagnostic, consistency
        self.rlcf = rlcf

    def components(
        self, images: torch.Tensor, reports: list[str], comparative_only: bool = False
    ) -> Components:
        """Merge the scorers' outputs for one batch (anchor batches skip posture)."""
        out = Components()
        if self.posture is not None and not comparative_only:
            p = self.posture(images)
            out.psi, out.r_align = p.psi, p.r_align
        if self.diagnostic is not None:
            d = self.diagnostic(images, reports)
            out.diag_acc, out.diag_probs = d.diag_acc, d.diag_probs
        if self.consistency is not None:
            out.consistency = self.consistency(images, reports).consistency
        return out

    def score(
        self,
        images: torch.Tensor,  # [B,1,H,W] in [0,1]
        reports: list[str],
        anchor_images: torch.Tensor | None = None,  # [B,1,H,W]
    ) -> RewardResult:
        imaging.validate(images)
        if len(reports) != images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images but {len(reports)} reports; send one report per image"
            )
        if anchor_images is not None:
            imaging.validate(anchor_images, "anchor_images")
            if anchor_images.shape[0] != images.shape[0]:
                raise ValueError(
                    f"got {anchor_images.shape[0]} anchor images for {images.shape[0]} images; send one per image"
                )
        policy = self.components(images, reports)
        anchor = None
        if anchor_images is not None and self.comparative(sent_anchors=True):
            anchor = self.components(anchor_images, reports, comparative_only=True)
        rlcf = self.rlcf if self.rlcf is not None else anchor is not None
        total = combine(policy, anchor, self.weights, rlcf=rlcf)
        return RewardResult(policy=policy, anchor=anchor, total=total, models=self.info())

    def comparative(self, sent_anchors: bool) -> bool:
        """Whether a call's total is RLCF: ``rlcf`` if set, else anchors sent and a comparative weight."""
        if self.rlcf is not None:
            return self.rlcf
        return sent_anchors and bool(COMPARATIVE & set(self.weights))

    def info(self) -> list[ModelInfo]:
        return [s.info for s in (self.posture, self.diagnostic, self.consistency) if s is not None]
