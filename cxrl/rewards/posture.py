"""Posture-alignment scorer: psi from the posture net and ``r_align`` (CXRL Sec. 2.3)."""

from __future__ import annotations

import torch

from cxrl import imaging
from cxrl.models.posture import PostureNet
from cxrl.rewards.types import Components, ModelInfo, r_align


class PostureScorer:
    """images ``[B,1,H,W]`` in [0,1], any resolution -> Components(psi ``[B,5]``, r_align ``[B]``)."""

    def __init__(self, model: PostureNet, info: ModelInfo, device: str = "cpu", max_batch: int = 64):
        self.model = model.to(device).eval()
        self.info = info
        self.device = device
        self.max_batch = max_batch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Components:
        imaging.validate(images)
        size = self.model.cfg.input_size
        psi = torch.cat(
            [
                self.model(imaging.resize(chunk, size).to(self.device)).float().cpu()
                for chunk in images.split(self.max_batch)
            ]
        )  # [B,5]
        return Components(psi=psi, r_align=r_align(psi))
