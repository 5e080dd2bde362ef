"""Report-consistency scorer: cosine between CXR-CLIP image and report embeddings (CXRL Sec. 2.3).

``r_consist = cos(Fv(x), Ft(y)) - cos(Fv(x_anchor), Ft(y))`` is formed by
cxrl.rewards.types.combine from the per-image cosines computed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cxrl.models.cxr_clip import CXRClip
from cxrl.rewards.types import Components, ModelInfo, check_images_reports

TEXT_CACHE_SIZE = 50_000


class ConsistencyScorer:
    """(images ``[B,1,H,W]``, reports) -> Components(consistency ``[B]`` cosine in [-1, 1])."""

    def __init__(self, model: CXRClip, tokenizer, info: ModelInfo, device: str = "cpu", max_batch: int = 64):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.max_batch = max_batch
        self._text: dict[str, torch.Tensor] = {}  # report -> unit embedding [P]

    def text_embeddings(self, reports: Sequence[str]) -> torch.Tensor:
        """Unit-norm report embeddings ``[B,P]`` (cached by text: the same prompts recur every epoch)."""
        missing = list(dict.fromkeys(r for r in reports if r not in self._text))
        for start in range(0, len(missing), self.max_batch):
            chunk = missing[start : start + self.max_batch]
            tokens = self.tokenizer(
                chunk,
                padding="longest",
                truncation=True,
                max_length=self.model.cfg.text_max_length,
                return_tensors="pt",
            )
            tokens = {k: v.to(self.device) for k, v in tokens.items()}
            emb = self.model.encode_text(tokens).float().cpu()
            if len(self._text) + len(chunk) > TEXT_CACHE_SIZE:
                self._text.clear()
            self._text.update(zip(chunk, emb, strict=True))
        return torch.stack([self._text[r] for r in reports])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, reports: Sequence[str]) -> Components:
        check_images_reports(images, reports)
        if any(not isinstance(r, str) or not r.strip() for r in reports):
            raise ValueError("every report must be a non-empty string")
        img = torch.cat(
            [
                self.model.encode_image(chunk.to(self.device)).float().cpu()
                for chunk in images.split(self.max_batch)
            ]
        )  # [B,P]
        txt = self.text_embeddings(reports)  # [B,P]
        return Components(consistency=(img * txt).sum(dim=-1).clamp(-1.0, 1.0))
