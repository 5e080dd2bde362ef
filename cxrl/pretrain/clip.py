"""`cxrl pretrain clip`: the default world's small CXR-CLIP, trained contrastively (CLIP InfoNCE).

A WordPiece vocabulary is learnt on the training reports (``tokenizers``), then a small ResNet
image encoder and a tiny BERT are trained with the symmetric InfoNCE loss of CLIP / CXR-CLIP
(You et al., 2023, image-text contrastive term) on matched image-report pairs, with multiple
positives per row (``--positives``):

- ``labels``: every report in the batch whose label set (the report labeler's labels,
  as the dataset records them) equals the image's own report's is a positive. Most reports are
  worded variants of "no acute cardiopulmonary process"; plain InfoNCE would push an image away
  from all the equivalent reports of other normal studies (false negatives), the problem
  MedCLIP's semantic matching loss and CXR-CLIP's multiple positives address.
- ``text`` (default, how the committed default-world checkpoint was trained): only reports with
  the very same text are positives (the world reuses report texts).

``--label-weight W`` adds an auxiliary multi-label loss (binary cross-entropy of a linear head on
the shared embedding, the same head for images and reports) on the report labeler's labels:
positive 1, uncertain 0.5, negated or unmentioned 0. It asks both encoders to place a study by its
findings, which InfoNCE on a few thousand reports learns slowly, negation above all ("no
effusion" against "effusion"). The head is used for training only and is not saved.

Training augmentations, all off by default: ``--augment S`` (random affine and
brightness/contrast of the images), ``--shuffle-sentences P`` (sentence order of the reports,
CXR-CLIP's text augmentation), ``--drop-sentences P`` (sentences left out where the report labeler
finds the same findings without them) and ``--mask-tokens P`` (report tokens replaced by [MASK]).
``--pooling`` picks how the report's token states become one vector: ``eos`` as CXR-CLIP does, or
``mean`` (recorded in the checkpoint's config). ``--loss sigmoid`` swaps InfoNCE for SigLIP's
pairwise loss. The committed default-world checkpoint used ``--pooling mean --shuffle-sentences
0.5 --drop-sentences 0.5`` (docs/results/clip-default-world.md has the recipe search).

Quality (test split): AUROC of matched pairs' cosine against pairs whose report carries a
different label set (one mismatched report per image, drawn deterministically).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cxrl import imaging
from cxrl.labels import LABELS, UNCERTAIN
from cxrl.models.cxr_clip import ClipConfig, CXRClip
from cxrl.pretrain import common, fit
from cxrl.pretrain.losses import clip_loss, sigmoid_loss
from cxrl.pretrain.vocab import train_wordpiece
from cxrl.reports.labeler import label_findings
from cxrl.world.posture import affine_matrix, warp

log = logging.getLogger(__name__)


def label_key(labels: dict[str, int]) -> tuple:
    return tuple(sorted(labels.items()))


def label_targets(records: list) -> torch.Tensor:
    """``[N, L]`` soft targets over :data:`~cxrl.labels.LABELS`: positive 1, uncertain 0.5, else 0."""
    value = {1: 1.0, UNCERTAIN: 0.5}
    return torch.tensor([[value.get(r.labels.get(name, 0), 0.0) for name in LABELS] for r in records])


def positives_matrix(keys: list) -> torch.Tensor:
    """``[b,b]`` bool: pair (i, j) is a positive when their keys (report text or label set) are equal."""
    return torch.tensor([[a == b for b in keys] for a in keys])


def augment_images(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random per-image affine (scale 1 +- 0.1, rotation +- 5 degrees, shift +- 0.05) and
    brightness / contrast jitter (+- 0.05, x 1 +- 0.15) of ``[B,1,H,W]`` in [0,1], as CXR-CLIP
    augments its training images; ``strength`` scales every range (0: unchanged)."""
    if strength <= 0:
        return x
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g)

    scale = 1 + strength * u(-0.1, 0.1)
    theta = strength * u(-1, 1) * (5 * np.pi / 180)
    tx, ty = strength * u(-0.05, 0.05), strength * u(-0.05, 0.05)
    # the posture convention's sampling affine: zoom by ``scale``, rotate by ``theta``, shift by (tx, ty)
    out = warp(x, affine_matrix(torch.stack([1 / scale, 1 / scale, tx, ty, theta], dim=1)))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (1 + strength * u(-0.15, 0.15)).view(b, 1, 1, 1)
    bright = (strength * u(-0.05, 0.05)).view(b, 1, 1, 1)
    return ((out - mean) * contrast + mean + bright).clamp(0, 1)


def sentences(text: str) -> list[str]:
    """A report's sentences, each ending with a full stop."""
    parts = [s.strip() for s in text.replace("\n", " ").split(". ") if s.strip()]
    return [s if s.endswith(".") else s + "." for s in parts]


def shuffle_sentences(text: str, rng: np.random.Generator, p: float = 0.5) -> str:
    """With probability ``p``, the report's sentences in a random order (CXR-CLIP's text augmentation)."""
    if p <= 0 or rng.random() >= p:
        return text
    parts = sentences(text)
    if len(parts) < 2:
        return text
    return " ".join(parts[i] for i in rng.permutation(len(parts)))


def droppable_sentences(text: str) -> list[bool]:
    """For each of :func:`sentences`, whether the report without it has the very same findings
    (value and side of every label, by the report labeler): the sentences that ``--drop-sentences``
    may leave out without changing what the report says about the image."""
    parts = sentences(text)
    if len(parts) < 2:
        return [False] * len(parts)
    full = label_findings(text)
    return [label_findings(" ".join(parts[:i] + parts[i + 1 :])) == full for i in range(len(parts))]


def drop_sentences(text: str, droppable: list[bool], rng: np.random.Generator, p: float) -> str:
    """Leave out each droppable sentence with probability ``p`` (at least one sentence stays)."""
    parts = sentences(text)
    if p <= 0 or len(parts) < 2 or len(droppable) != len(parts):
        return text
    keep = [not (d and rng.random() < p) for d in droppable]
    if not any(keep):
        keep[int(rng.integers(len(parts)))] = True
    return " ".join(s for s, k in zip(parts, keep, strict=True) if k)


def mask_tokens(
    tokens: dict[str, torch.Tensor], mask_id: int, special: list[int], p: float, g: torch.Generator
) -> dict:
    """Replace each ordinary token (not special, not padding) with ``mask_id`` with probability ``p``."""
    if p <= 0:
        return tokens
    ids = tokens["input_ids"]
    ordinary = ~torch.isin(ids, torch.tensor(special)) & tokens["attention_mask"].bool()
    hit = (torch.rand(ids.shape, generator=g) < p) & ordinary
    return {**tokens, "input_ids": ids.masked_fill(hit, mask_id)}


def mismatched_partners(records: list, seed: int) -> list[int]:
    """For each record, the index of a record whose label set differs (deterministic)."""
    rng = np.random.default_rng(seed)
    keys = [label_key(r.labels) for r in records]
    partners = []
    for key in keys:
        candidates = [j for j in rng.permutation(len(records)) if keys[j] != key]
        if not candidates:
            raise ValueError("every test report has the same label set; cannot form mismatched pairs")
        partners.append(int(candidates[0]))
    return partners


@torch.no_grad()
def pair_auroc(model: CXRClip, tokenizer, images: torch.Tensor, records: list, seed: int) -> dict:
    """Matched vs different-label-set pairs: AUROC of the cosine, and the mean cosines."""
    model.eval()
    img = torch.cat([model.encode_image(imaging.from_uint8(c)) for c in images.split(128)])  # [N,P]
    reports = [r.report for r in records]
    txt = torch.cat(
        [
            model.encode_text(_tokens(tokenizer, reports[s : s + 128], model.cfg))
            for s in range(0, len(reports), 128)
        ]
    )
    partners = mismatched_partners(records, seed)
    matched = (img * txt).sum(-1).numpy()
    mismatched = (img * txt[partners]).sum(-1).numpy()
    y = np.r_[np.ones_like(matched), np.zeros_like(mismatched)]
    return {
        "matched_vs_mismatched_auroc": float(roc_auc_score(y, np.r_[matched, mismatched])),
        "mean_cos_matched": float(matched.mean()),
        "mean_cos_mismatched": float(mismatched.mean()),
        "n_test_pairs": len(records),
    }


def _tokens(tokenizer, texts: list[str], cfg: ClipConfig) -> dict[str, torch.Tensor]:
    return dict(
        tokenizer(
            texts, padding="longest", truncation=True, max_length=cfg.text_max_length, return_tensors="pt"
        )
    )


def train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    g = common.seed_everything(args.seed)
    images, records = common.load_split(args.data, "train", args.size, args.limit)
    reports = [r.report for r in records]
    keys = reports if args.positives == "text" else [label_key(r.labels) for r in records]
    tokenizer = train_wordpiece(reports, vocab_size=args.vocab_size)
    cfg = ClipConfig(
        image_arch="small",
        small_widths=tuple(args.widths),
        image_size=args.size,
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=args.hidden * 2,
        max_position=args.max_tokens,
        text_max_length=args.max_tokens,
        proj_dim=args.proj_dim,
        pooling=args.pooling,
    )
    model = CXRClip(cfg)
    # training only; built only when used, so runs without it draw the same random numbers as before
    head = torch.nn.Linear(cfg.proj_dim, len(LABELS)) if args.label_weight > 0 else None
    targets = label_targets(records) if head is not None else None  # [N, L]
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    # the sigmoid loss's threshold: training only (the reward reads the cosine); SigLIP's init
    bias = torch.nn.Parameter(torch.tensor(-10.0)) if args.loss == "sigmoid" else None
    if bias is not None:
        with torch.no_grad():
            model.logit_scale.fill_(float(np.log(10.0)))
        params.append(bias)
    total = fit.total_steps(len(records), args.batch, args.epochs, args.max_steps, g)
    opt, sched = fit.one_cycle(params, args.lr, 0.05, total, pct_start=0.1)
    text_rng = np.random.default_rng([args.seed, 7])
    droppable = {t: droppable_sentences(t) for t in set(reports)} if args.drop_sentences > 0 else {}

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        x = augment_images(imaging.from_uint8(images[idx]), g, args.augment)
        texts = [reports[i] for i in idx.tolist()]
        if args.drop_sentences > 0:
            texts = [drop_sentences(t, droppable[t], text_rng, args.drop_sentences) for t in texts]
        texts = [shuffle_sentences(t, text_rng, args.shuffle_sentences) for t in texts]
        img_emb = model.encode_image(x)
        tokens = _tokens(tokenizer, texts, cfg)
        tokens = mask_tokens(tokens, tokenizer.mask_token_id, tokenizer.all_special_ids, args.mask_tokens, g)
        txt_emb = model.encode_text(tokens)
        pos = positives_matrix([keys[i] for i in idx.tolist()])
        if bias is None:
            loss = clip_loss(img_emb, txt_emb, model.logit_scale, pos)
        else:
            loss = sigmoid_loss(img_emb, txt_emb, model.logit_scale, bias, pos)
        if head is not None:
            y = targets[idx]
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            loss = loss + args.label_weight * 0.5 * (bce(head(img_emb), y) + bce(head(txt_emb), y))
        return loss

    model.train()
    batches = fit.epoch_batches(len(records), args.batch, g, args.epochs)
    result = fit.fit(loss_fn, batches, opt, sched, total, name="clip")
    test_images, test_records = common.load_split(args.data, "test", args.size, args.limit)
    figures = {**pair_auroc(model, tokenizer, test_images, test_records, args.seed), "steps": result.steps}
    for key, value in figures.items():
        print(f"clip {key}: {value:.4f}" if isinstance(value, float) else f"clip {key}: {value}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    common.save(args, "clip", model.state_dict(), cfg.model_dump(mode="json"), figures)
    return 0


def register_pretrain(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("clip", help="small CXR-CLIP (ResNet + tiny BERT) trained contrastively")
    common.add_common_args(parser, size=128, epochs=10, batch=64, lr=2e-3)
    parser.add_argument("--vocab-size", type=int, default=2000, help="WordPiece vocabulary size")
    parser.add_argument("--widths", type=int, nargs=4, default=[32, 64, 128, 256], help="ResNet stage widths")
    parser.add_argument("--hidden", type=int, default=128, help="BERT hidden width")
    parser.add_argument("--layers", type=int, default=2, help="BERT layers")
    parser.add_argument("--heads", type=int, default=2, help="BERT attention heads")
    parser.add_argument("--max-tokens", type=int, default=128, help="report token limit")
    parser.add_argument("--proj-dim", type=int, default=512, help="shared embedding width")
    parser.add_argument(
        "--pooling",
        choices=("eos", "bos", "mean"),
        default="eos",
        help="how the report's token states become one vector (eos: CXR-CLIP's)",
    )
    parser.add_argument(
        "--positives",
        choices=("labels", "text"),
        default="text",
        help="in-batch positives: reports with the same text (default; the committed checkpoint's"
        " training) or with the same label set",
    )
    parser.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="weight of the auxiliary multi-label loss on the report labeler's labels (0: off)",
    )
    parser.add_argument(
        "--augment",
        type=float,
        default=0.0,
        help="strength of the image augmentation: random affine and brightness/contrast (0: off, 1: the"
        " documented ranges)",
    )
    parser.add_argument(
        "--loss",
        choices=("infonce", "sigmoid"),
        default="infonce",
        help="contrastive loss: CLIP's symmetric InfoNCE, or SigLIP's pairwise sigmoid (calibrates the"
        " cosine across images)",
    )
    parser.add_argument(
        "--drop-sentences",
        type=float,
        default=0.0,
        help="probability that a training report's sentence is left out, for sentences whose removal"
        " leaves the report's findings (labels and sides) unchanged (0: off)",
    )
    parser.add_argument(
        "--mask-tokens",
        type=float,
        default=0.0,
        help="probability that a training report's token is replaced by [MASK] (0: off)",
    )
    parser.add_argument(
        "--shuffle-sentences",
        type=float,
        default=0.0,
        help="probability that a training report's sentences are put in a random order (0: off)",
    )
    parser.set_defaults(func=train)
