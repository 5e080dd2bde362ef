"""`cxrl pretrain posture`: train the posture ResNet-18 the paper's way (CXRL Sec. 2.3).

The net predicts psi; the training image warped by psi's affine is compared with the
canonical CXR (the mean of 500 random training CXRs, or the dataset's ``canonical.png``)
by mean squared error. No posture labels are needed, so this runs on MIMIC-CXR-JPG too.

``--loss-size L`` compares at L px while the net sees ``--size`` px: sharper edges to align on,
at little cost (the warp is cheap next to the ResNet).

Optional, off by default: ``--aux-supervised W`` adds ``W * mean((psi - psi_true)^2)`` on
datasets that record the ground-truth posture (the default world). It is a diagnostic for the
synthetic world only; real data always trains by alignment alone, and so does the committed
default-world checkpoint (its manifest records the command).
``python -m cxrl.eval.posture_ceiling`` gives the best Spearman any net trained on this loss
can reach on a dataset with ground truth (docs/results/posture-default-world.md).

Quality (test split, when ground truth exists): Spearman correlation between r_align of the
predicted and of the true psi, and mean absolute error per psi parameter.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import torch
from scipy.stats import spearmanr

from cxrl import imaging
from cxrl.models.posture import PSI_NAMES, PostureConfig, PostureNet, alignment_loss
from cxrl.pretrain import common, fit
from cxrl.rewards.types import r_align

log = logging.getLogger(__name__)
CANONICAL_SAMPLES = 500


def canonical_image(data_dir: Path, train: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """``[1,1,size,size]`` in [0,1]: ``canonical.png`` if present, else the mean of 500 random train CXRs."""
    path = data_dir / "canonical.png"
    if path.is_file():
        return imaging.resize(imaging.load_image(path)[None], size)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(train.shape[0], generator=g)[:CANONICAL_SAMPLES]
    return imaging.from_uint8(train[pick]).mean(dim=0, keepdim=True)


def true_psi(records: list) -> torch.Tensor | None:
    """Ground-truth psi ``[N,5]`` when every record has one, else None."""
    if not records or any(r.posture is None for r in records):
        return None
    return torch.tensor([list(r.posture) for r in records], dtype=torch.float32)


@torch.no_grad()
def predict(model: PostureNet, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """uint8 ``[N,1,S,S]`` -> psi ``[N,5]``."""
    model.eval()
    return torch.cat([model(imaging.from_uint8(chunk)) for chunk in images.split(batch)])


def quality(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """Spearman of r_align(pred) vs r_align(truth) and per-parameter mean absolute errors."""
    rho = spearmanr(r_align(pred).numpy(), r_align(truth).numpy()).statistic
    err = (pred - truth).abs().mean(dim=0)
    out = {"spearman_r_align": float(rho), "n_test": int(pred.shape[0])}
    out.update({f"mae_{name}": float(e) for name, e in zip(PSI_NAMES, err, strict=True)})
    out["mae_theta_deg"] = math.degrees(out["mae_theta"])
    return out


def train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    g = common.seed_everything(args.seed)
    data = Path(args.data)
    loss_size = args.loss_size or args.size
    if loss_size < args.size:
        raise ValueError(f"--loss-size {loss_size} is below --size {args.size}; use at least the input size")
    images, records = common.load_split(data, "train", loss_size, args.limit)  # [N,1,L,L] uint8
    canonical = canonical_image(data, images, loss_size, args.seed)  # [1,1,L,L]
    psi_true = true_psi(records)
    if args.aux_supervised > 0 and psi_true is None:
        raise ValueError("--aux-supervised needs ground-truth posture in the dataset (the default world)")
    cfg = PostureConfig(input_size=args.size)
    model = PostureNet(cfg)
    total = fit.total_steps(images.shape[0], args.batch, args.epochs, args.max_steps, g)
    opt, sched = fit.one_cycle(model.parameters(), args.lr, 1e-4, total, pct_start=0.1)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        x = imaging.from_uint8(images[idx])  # [b,1,L,L]
        psi = model(imaging.resize(x, args.size))  # [b,5] from the net's [b,1,S,S] view
        loss = alignment_loss(x, psi, canonical)
        if args.aux_supervised > 0:
            loss = loss + args.aux_supervised * (psi - psi_true[idx]).pow(2).mean()
        return loss

    model.train()
    batches = fit.epoch_batches(images.shape[0], args.batch, g, args.epochs)
    result = fit.fit(loss_fn, batches, opt, sched, total, name="posture alignment")
    test_images, test_records = common.load_split(data, "test", args.size, args.limit)
    test_truth = true_psi(test_records)
    figures = {"steps": result.steps, "final_train_loss": result.epoch_losses[-1]}
    if test_truth is not None:
        figures.update(quality(predict(model, test_images), test_truth))
    figures["aux_supervised"] = args.aux_supervised
    figures["loss_size"] = loss_size
    for key, value in figures.items():
        print(f"posture {key}: {value:.4f}" if isinstance(value, float) else f"posture {key}: {value}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    imaging.save_image(canonical[0], out / "canonical.png")
    common.save(args, "posture", model.state_dict(), cfg.model_dump(mode="json"), figures)
    return 0


def register_pretrain(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("posture", help="posture alignment ResNet-18 (warp-to-canonical L2)")
    common.add_common_args(parser, size=128, epochs=6, batch=32, lr=1e-3)
    parser.add_argument(
        "--aux-supervised",
        type=float,
        default=0.0,
        help="weight of an auxiliary L2 to ground-truth psi (synthetic world only; 0 = paper's way)",
    )
    parser.add_argument(
        "--loss-size",
        type=int,
        default=None,
        help="resolution in pixels at which the warped image is compared with the canonical one "
        "(default: --size); finer than the net's input sharpens the edges the alignment follows",
    )
    parser.set_defaults(func=train)
