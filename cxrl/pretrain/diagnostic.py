"""`cxrl pretrain diagnostic`: the default world's small torchxrayvision DenseNet.

Multi-label binary cross-entropy over the 18 pathologies, on the targets the diagnostic reward
counts (cxrl.rewards.diagnostic.report_targets: stated 1/0, "No Finding" = all unmentioned
negative, uncertain and unmentioned ignored). Operating points are then calibrated on a
validation split carved from the training split by report (Youden's J, as torchxrayvision
calibrates its released models) and stored in the model's ``op_threshs`` so that xrv's
``op_norm`` maps each threshold to 0.5.

Quality: per-label and mean AUROC on the test split over labels with >= 20 positives.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from cxrl import imaging
from cxrl.labels import XRV_PATHOLOGIES
from cxrl.models.xrv_classifier import DiagnosticConfig, build_densenet, logits, youden_thresholds
from cxrl.pretrain import common, fit
from cxrl.rewards.diagnostic import report_targets

log = logging.getLogger(__name__)
MIN_TEST_POSITIVES = 20


def targets_of(records: list) -> torch.Tensor:
    """``[N,18]`` 1/0/NaN targets from each record's labels."""
    return torch.stack([report_targets(r.labels) for r in records])


@torch.no_grad()
def sigmoid_scores(model: torch.nn.Module, images: torch.Tensor, batch: int = 128) -> np.ndarray:
    """uint8 ``[N,1,S,S]`` -> uncalibrated sigmoid probabilities ``[N,18]``."""
    model.eval()
    out = [
        torch.sigmoid(logits(model, imaging.to_xrv(imaging.from_uint8(c), size=None)))
        for c in images.split(batch)
    ]
    return torch.cat(out).numpy()


def auroc_table(scores: np.ndarray, targets: np.ndarray, min_positives: int = MIN_TEST_POSITIVES) -> dict:
    """Per-label AUROC for labels with enough positives (and any negatives); their mean."""
    per_label = {}
    for j, name in enumerate(XRV_PATHOLOGIES):
        known = ~np.isnan(targets[:, j])
        y = targets[known, j]
        if (y == 1).sum() >= min_positives and (y == 0).sum() > 0:
            per_label[name] = float(roc_auc_score(y, scores[known, j]))
    mean = float(np.mean(list(per_label.values()))) if per_label else float("nan")
    return {"auroc": per_label, "mean_auroc": mean, "min_positives": min_positives}


def masked_bce(logit: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """BCE over known targets only (NaN = does not count)."""
    known = ~torch.isnan(target)
    loss = F.binary_cross_entropy_with_logits(
        logit, torch.nan_to_num(target), pos_weight=pos_weight, reduction="none"
    )  # [b,18]
    return (loss * known).sum() / known.sum().clamp(min=1)


def train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    g = common.seed_everything(args.seed)
    images, records = common.load_split(args.data, "train", args.size, args.limit)
    targets = targets_of(records)  # [N,18]
    fit_idx, val_idx = common.split_by_report(records, args.val_fraction, args.seed)
    fit_idx_t = torch.tensor(fit_idx)
    fit_t = targets[fit_idx_t]
    pos = (fit_t == 1).sum(0).float()
    neg = (fit_t == 0).sum(0).float()
    pos_weight = (neg / pos.clamp(min=1)).clamp(1.0, 20.0).sqrt()  # soften rare-label imbalance
    cfg = DiagnosticConfig(input_size=args.size, **_arch(args))
    model = build_densenet(cfg)
    total = fit.total_steps(len(fit_idx), args.batch, args.epochs, args.max_steps, g)
    opt, sched = fit.one_cycle(model.parameters(), args.lr, 1e-4, total, pct_start=0.15)

    def loss_fn(b: torch.Tensor) -> torch.Tensor:
        idx = fit_idx_t[b]
        x = imaging.from_uint8(images[idx])
        if args.flip:  # left-right flips keep the labels (laterality is not a target)
            x = torch.where(torch.rand(x.shape[0], 1, 1, 1, generator=g) < 0.5, x.flip(-1), x)
        return masked_bce(logits(model, imaging.to_xrv(x, size=None)), targets[idx], pos_weight)

    model.train()
    batches = fit.epoch_batches(len(fit_idx), args.batch, g, args.epochs)
    result = fit.fit(loss_fn, batches, opt, sched, total, name="diagnostic bce")
    val_scores = sigmoid_scores(model, images[torch.tensor(val_idx)])
    threshs = youden_thresholds(val_scores, targets[torch.tensor(val_idx)].numpy())
    model.op_threshs = torch.tensor(threshs, dtype=torch.float32)
    test_images, test_records = common.load_split(args.data, "test", args.size, args.limit)
    table = auroc_table(sigmoid_scores(model, test_images), targets_of(test_records).numpy())
    figures = {
        **table,
        "op_threshs": {
            n: (None if np.isnan(t) else float(t)) for n, t in zip(XRV_PATHOLOGIES, threshs, strict=True)
        },
        "n_fit": len(fit_idx),
        "n_val": len(val_idx),
        "n_test": len(test_records),
        "steps": result.steps,
    }
    for name, auc in table["auroc"].items():
        print(f"diagnostic auroc {name}: {auc:.4f}")
    print(f"diagnostic mean_auroc (labels with >= {MIN_TEST_POSITIVES} positives): {table['mean_auroc']:.4f}")
    common.save(args, "diagnostic", model.state_dict(), cfg.model_dump(mode="json"), figures)
    return 0


def _arch(args: argparse.Namespace) -> dict:
    return {
        "growth_rate": args.growth_rate,
        "block_config": tuple(args.block_config),
        "num_init_features": args.num_init_features,
    }


def register_pretrain(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "diagnostic", help="small torchxrayvision DenseNet with calibrated operating points"
    )
    common.add_common_args(parser, size=128, epochs=8, batch=32, lr=3e-3)
    defaults = DiagnosticConfig()
    parser.add_argument("--growth-rate", type=int, default=defaults.growth_rate, help="DenseNet growth rate")
    parser.add_argument(
        "--block-config", type=int, nargs="+", default=list(defaults.block_config), help="layers per block"
    )
    parser.add_argument(
        "--num-init-features", type=int, default=defaults.num_init_features, help="stem channels"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of train reports used to calibrate"
    )
    parser.add_argument("--flip", action="store_true", help="random left-right flip augmentation")
    parser.set_defaults(func=train)
