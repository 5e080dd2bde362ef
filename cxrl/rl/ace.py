"""Learnable adaptive condition embeddings (ACE) of CXRL (Han et al., MICCAI 2024, Sec. 2.2 (II)).

Following prompt tuning (Lester et al. 2021), ``N`` learnable vectors ``c_s`` of the text width are
concatenated in front of the frozen text encoder's output ``c_p`` to form the UNet's cross-attention
condition ``c = [c_s, c_p]`` of shape ``[B, N+M, d]``.
"""

from __future__ import annotations

import torch
from torch import nn


class AdaptiveConditionEmbeddings(nn.Module):
    """``N`` learnable condition tokens ``c_s`` [N, d], prepended to every ``c_p`` [B, M, d]."""

    def __init__(self, num_tokens: int, width: int, init_std: float = 0.02):
        super().__init__()
        if num_tokens <= 0 or width <= 0:
            raise ValueError(f"ACE needs num_tokens > 0 and width > 0, got {num_tokens}, {width}")
        if init_std < 0:
            raise ValueError(f"ACE init_std must be >= 0, got {init_std}")
        self.tokens = nn.Parameter(torch.randn(num_tokens, width) * init_std)  # [N, d]

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[0]

    def forward(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """``c_p`` [B, M, d] -> ``[c_s, c_p]`` [B, N+M, d]."""
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != self.tokens.shape[1]:
            raise ValueError(
                f"prompt embeddings must be [B, M, {self.tokens.shape[1]}], got {list(prompt_embeds.shape)}"
            )
        c_s = self.tokens.to(prompt_embeds.dtype).expand(prompt_embeds.shape[0], -1, -1)  # [B, N, d]
        return torch.cat([c_s, prompt_embeds], dim=1)
