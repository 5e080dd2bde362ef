"""The CXRL policy: a generator pipeline with LoRA and ACE, its anchor, and how a config builds it.

:class:`Policy` is the CXRL policy (Han et al., MICCAI 2024, Sec. 2.2): the base UNet with LoRA
adapters (Hu et al. 2022; peft) on its attention projections, and learnable adaptive condition
embeddings (ACE, :class:`AdaptiveConditionEmbeddings`) prepended to the frozen text encoder output, ``c = [c_s, c_p]``.

Condition length (paper, Sec. 2.2 (II) and Sec. 3: N = 3, M <= 74): the condition fits the text
encoder's L = 77 positions, N + M = L. ``c_p`` is the first ``M = L - N`` positions of the encoder
output (BOS, the report's tokens, EOS, padding); reports are tokenised with truncation at M
positions so that their EOS is always inside ``c_p``. CLIP's text encoder is causal, so these M
states are exactly what the encoder gives at length M: one encoding at L serves both the anchor
(all L positions, RoentGen's own conditioning) and the policy (``[c_s, c_p[:M]]``, also L). The
report filter of :mod:`cxrl.reports.sections` (M <= 74 word tokens) is the paper's dataset rule;
this truncation is what guarantees the condition's length whatever the tokenizer.

The anchor model is the same weights with adapters disabled and no ACE (:meth:`Policy.anchor`),
so the engine samples it without a second copy of the UNet; only sampling the anchor ahead on its
own thread (``anchor_ahead``, :class:`cxrl.rl.frozen_anchor.FrozenAnchor`) holds a deep copy of the pipeline.

ACE (Sec. 2.2 (II)) follows prompt tuning (Lester et al. 2021): ``N`` learnable vectors ``c_s`` of
the text width are concatenated in front of the frozen text encoder's output ``c_p`` to form the
UNet's cross-attention condition ``c = [c_s, c_p]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from torch import nn

from cxrl.models.generator import LORA_TARGETS, freeze, load_pipeline
from cxrl.rl.config import CXRLConfig

log = logging.getLogger(__name__)


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


class Policy(nn.Module):
    """The CXRL policy: base pipeline + LoRA on the UNet attention + ACE; :meth:`anchor` is the base.

    Only LoRA and ACE parameters require gradients.
    """

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        lora_rank: int = 4,
        lora_alpha: float | None = None,
        lora_targets: Sequence[str] = LORA_TARGETS,
        ace_tokens: int = 3,
        ace_init_std: float = 0.02,
        seed: int = 0,
    ):
        super().__init__()
        if lora_rank < 0 or ace_tokens < 0:
            raise ValueError(f"lora_rank ({lora_rank}) and ace_tokens ({ace_tokens}) must be >= 0")
        self.pipe = pipe
        self.unet = pipe.unet
        freeze(pipe)
        torch.manual_seed(seed)
        self.lora_rank = lora_rank
        if lora_rank > 0:
            pipe.unet.add_adapter(
                LoraConfig(
                    r=lora_rank,
                    lora_alpha=lora_alpha or lora_rank,
                    init_lora_weights="gaussian",
                    target_modules=list(lora_targets),
                )
            )
            for param in pipe.unet.parameters():  # train adapters in fp32 even on an fp16 base
                if param.requires_grad:
                    param.data = param.data.float()
        width = pipe.text_encoder.config.hidden_size
        self.ace = AdaptiveConditionEmbeddings(ace_tokens, width, ace_init_std) if ace_tokens > 0 else None
        self.max_positions = int(pipe.tokenizer.model_max_length)  # L: the text encoder's window
        self.report_positions = self.max_positions - ace_tokens  # M = L - N positions of c_p
        if self.report_positions < 3:
            raise ValueError(
                f"{ace_tokens} ACE tokens leave {self.report_positions} of the tokenizer's "
                f"{self.max_positions} positions for the report; use fewer ACE tokens"
            )
        self._is_anchor = False
        self._uncond: torch.Tensor | None = None

    # -- modes -------------------------------------------------------------------------------------
    @contextmanager
    def anchor(self) -> Iterator[Policy]:
        """Inside this context the policy is the frozen anchor: adapters disabled, no ACE."""
        if self._is_anchor:
            raise RuntimeError("already in anchor mode")
        self._is_anchor = True
        if self.lora_rank > 0:
            self.unet.disable_adapters()
        try:
            yield self
        finally:
            if self.lora_rank > 0:
                self.unet.enable_adapters()
            self._is_anchor = False

    @property
    def is_anchor(self) -> bool:
        return self._is_anchor

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA weights in peft naming (``...to_q.lora_A.weight``)."""
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.unet) if self.lora_rank > 0 else {}

    # -- conditioning ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.unet.device

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Reports -> token ids ``[B, L]``: truncated at ``M = L - N`` positions (EOS kept), padded to L."""
        tok = self.pipe.tokenizer
        ids = tok(
            list(prompts),
            padding="max_length",
            max_length=self.report_positions,
            truncation=True,
            return_tensors="pt",
        ).input_ids  # [B, M]
        pad = torch.full((ids.shape[0], self.max_positions - ids.shape[1]), tok.pad_token_id, dtype=ids.dtype)
        return torch.cat([ids, pad], dim=1)  # [B, L]

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Reports -> frozen text-encoder output [B, L, d] (L = 77 for Stable Diffusion).

        The same for policy and anchor; :meth:`condition` takes the policy's ``c_p`` (first M).
        """
        if len(prompts) == 0:
            raise ValueError("no prompts given")
        return self.pipe.text_encoder(self.tokenize(prompts).to(self.device))[0]  # [B, L, d]

    def condition(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Encoder output [B, L, d] -> ``c = [c_s, c_p]`` [B, N+M = L, d] (policy), or itself (anchor, no ACE)."""
        if self.ace is None or self._is_anchor:
            return prompt_embeds
        return self.ace(prompt_embeds[:, : self.report_positions])  # [B, N+M, d]

    def uncond_embeds(self) -> torch.Tensor:
        """Encoder output of the empty report [1, M, d], cached (the encoder is frozen)."""
        if self._uncond is None or self._uncond.device != self.device:
            self._uncond = self.encode_prompts([""])
        return self._uncond

    def predict_noise(
        self,
        latents: torch.Tensor,  # [B, C, h, w]
        timesteps: torch.Tensor,  # [] or [B]
        prompt_embeds: torch.Tensor,  # [B, M, d] frozen c_p
        guidance_scale: float,
    ) -> torch.Tensor:
        """Classifier-free guided UNet output [B, C, h, w] (float32) for the current mode.

        ACE is prepended to the conditional and the unconditional branch alike, so both see the
        same sequence length and the guidance difference isolates the report.
        """
        b, dtype = latents.shape[0], self.unet.dtype
        latents = latents.to(dtype)  # the base may be fp16; LoRA, ACE and the result stay fp32
        cond = self.condition(prompt_embeds.to(dtype))
        t = timesteps.reshape(-1).expand(b)  # [B]
        if guidance_scale == 1.0:
            return self.unet(latents, t, encoder_hidden_states=cond).sample.float()
        uncond = self.condition(self.uncond_embeds().to(dtype).expand(b, -1, -1))
        out = self.unet(
            torch.cat([latents, latents]),
            torch.cat([t, t]),
            encoder_hidden_states=torch.cat([uncond, cond]),
        ).sample.float()
        eps_uncond, eps_cond = out.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] -> decoder pixels [B, 1|3, H, W] in about [-1, 1]."""
        vae = self.pipe.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


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
    """The non-empty reports of at most ``max_tokens`` tokens under the generator's tokenizer (M).

    A report longer than the policy's condition holds (``report_positions`` less BOS and EOS: 72 at
    SD's 77 positions with 3 ACE tokens) is kept and truncated there, its EOS kept (:meth:`Policy.tokenize`).
    """
    tok = policy.pipe.tokenizer
    kept = [r for r in reports if r.strip() and len(tok(r, verbose=False).input_ids) - 2 <= max_tokens]
    if len(kept) < len(reports):
        log.info("%d of %d reports fit the generator's M=%d tokens", len(kept), len(reports), max_tokens)
    return kept
