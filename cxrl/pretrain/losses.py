"""Training losses of ``cxrl pretrain``: CXR-CLIP's contrastive objectives over a batch of pairs.

- :func:`clip_loss`: symmetric InfoNCE (Radford et al., 2021, CLIP) with several positives per row
  as soft targets (as CXR-CLIP, You et al., MICCAI 2023, does for the images of one study);
- :func:`sigmoid_loss`: the pairwise sigmoid loss of SigLIP (Zhai et al., ICCV 2023).

Both take L2-normalised embeddings ``[B,P]`` and the model's learnable ``logit_scale``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pair_logits(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled cosine logits ``[B,B]`` and the positives mask (default the identity) of a batch."""
    logits = logit_scale.exp().clamp(max=100.0) * image_emb @ text_emb.t()  # [B,B]
    if positives is None:
        positives = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return logits, positives


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) over a batch of pairs ``[B,P]`` x ``[B,P]``, with multiple positives.

    ``positives`` ``[B,B]`` (bool or non-negative weights, optional; default the identity) marks
    which reports count as a match for each image: the cross-entropy targets of a row are its
    positives' weights normalised to sum to 1 (soft targets, as CXR-CLIP does for its several
    positives per study and MedCLIP for semantically equal pairs). Every row needs a positive.
    """
    logits, positives = _pair_logits(image_emb, text_emb, logit_scale, positives)
    weights = positives.to(logits.dtype)  # [B,B]
    if weights.shape != logits.shape or (weights < 0).any() or (weights.sum(dim=1) <= 0).any():
        raise ValueError(f"positives must be non-negative [{logits.shape[0]}]*2 with a positive in every row")
    target = weights / weights.sum(dim=1, keepdim=True)  # rows sum to 1
    target_t = weights.t() / weights.t().sum(dim=1, keepdim=True)  # text -> image direction
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target_t))


def sigmoid_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    bias: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP, Zhai et al., 2023) over a batch ``[B,P]`` x ``[B,P]``.

    Every image-report pair of the batch is its own binary problem: ``positives`` ``[B,B]``
    (bool, default the identity) are pushed above, all other pairs below, the one threshold
    ``-bias / exp(logit_scale)`` on the cosine. Unlike InfoNCE, which only ranks the reports of
    each row, this calibrates the cosine across images, the way a global matched-vs-mismatched
    AUROC reads it. Returns the mean over pairs of the binary cross-entropy, times ``B``
    (SigLIP's normalisation: a sum over each image's row).
    """
    logits, positives = _pair_logits(image_emb, text_emb, logit_scale, positives)
    logits = logits + bias
    if positives.shape != logits.shape:
        raise ValueError(f"positives must be [{logits.shape[0]}]*2, got {list(positives.shape)}")
    target = positives.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]
