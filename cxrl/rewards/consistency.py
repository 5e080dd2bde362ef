"""Report-consistency scorer: cosine between CXR-CLIP image and report embeddings (CXRL Sec. 2.3).

``r_consist = cos(Fv(x), Ft(y)) - cos(Fv(x_anchor), Ft(y))`` is formed by
cxrl.rewards.types.combine from the per-image cosines computed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cxrl.models.cxr_clip import CXRClip
from cxrl.rewards.types import Components, ModelInfo, check_images_reports

TEXT_CACHE_BYTES = 64 << 20  # report-embedding cache per scorer: text + embedding bytes, oldest evicted


def check_reports(reports: Sequence[str]) -> None:
    """Every report must be non-empty text (a per-item check: servers run it before batching)."""
    empty = [i for i, r in enumerate(reports) if not isinstance(r, str) or not r.strip()]
    if empty:
        raise ValueError(f"every report must be a non-empty string; reports {empty[:10]} are empty")


class ConsistencyScorer:
    """(images ``[B,1,H,W]``, reports) -> Components(consistency ``[B]`` cosine in [-1, 1])."""

    def __init__(self, model: CXRClip, tokenizer, info: ModelInfo, device: str = "cpu", max_batch: int = 64):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.max_batch = max_batch
        self._text: dict[str, torch.Tensor] = {}  # report -> unit embedding [P], oldest first
        self._text_bytes = 0  # what ``_text`` holds: UTF-8 text + embedding bytes

    def text_embeddings(self, reports: Sequence[str]) -> torch.Tensor:
        """Unit-norm report embeddings ``[B,P]`` (cached by text: the same prompts recur every epoch)."""
        found = {r: self._text[r] for r in reports if r in self._text}
        missing = list(dict.fromkeys(r for r in reports if r not in found))
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
            emb = self.model.encode_text(tokens).float().cpu()  # [n,P]
            for report, e in zip(chunk, emb, strict=True):
                found[report] = self._remember(report, e)
        return torch.stack([found[r] for r in reports])

    def _remember(self, report: str, emb: torch.Tensor) -> torch.Tensor:
        """Cache one embedding, evicting the oldest until the cache fits ``TEXT_CACHE_BYTES``."""
        emb = emb.clone()  # its own storage: a row view would keep the whole batch alive
        self._text[report] = emb
        self._text_bytes += _entry_bytes(report, emb)
        while self._text_bytes > TEXT_CACHE_BYTES and self._text:
            old, old_emb = next(iter(self._text.items()))
            del self._text[old]
            self._text_bytes -= _entry_bytes(old, old_emb)
        return emb

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, reports: Sequence[str]) -> Components:
        check_images_reports(images, reports)
        check_reports(reports)
        img = torch.cat(
            [
                self.model.encode_image(chunk.to(self.device)).float().cpu()
                for chunk in images.split(self.max_batch)
            ]
        )  # [B,P]
        txt = self.text_embeddings(reports)  # [B,P]
        return Components(consistency=(img * txt).sum(dim=-1).clamp(-1.0, 1.0))


def _entry_bytes(report: str, emb: torch.Tensor) -> int:
    return len(report.encode("utf-8")) + emb.numel() * emb.element_size()
