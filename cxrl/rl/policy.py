"""Building the CXRL policy a config describes, and the reports it can condition on."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from diffusers import StableDiffusionPipeline

from cxrl.models.generator import Policy, load_pipeline
from cxrl.rl.config import CXRLConfig

log = logging.getLogger(__name__)


def make_policy(cfg: CXRLConfig, pipe: StableDiffusionPipeline | None = None) -> Policy:
    """The policy a config describes, on ``pipe`` or on the pipeline ``cfg.generator`` names."""
    pipe = load_pipeline(cfg.generator, device=cfg.device) if pipe is None else pipe.to(cfg.device)
    return Policy(
        pipe,
        lora_rank=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        lora_targets=cfg.lora.targets,
        ace_tokens=cfg.ace.tokens if cfg.ace.enabled else 0,
        ace_init_std=cfg.ace.init_std,
        seed=cfg.seed,
    ).to(cfg.device)


def fitting_reports(policy: Policy, reports: Sequence[str], max_tokens: int) -> list[str]:
    """The non-empty reports of at most ``max_tokens`` tokens under the generator's tokenizer (M)."""
    tok = policy.pipe.tokenizer
    kept = [r for r in reports if r.strip() and len(tok(r, verbose=False).input_ids) - 2 <= max_tokens]
    if len(kept) < len(reports):
        log.info("%d of %d reports fit the generator's M=%d tokens", len(kept), len(reports), max_tokens)
    return kept
