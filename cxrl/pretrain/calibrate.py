"""Operating points for the labels a diagnostic checkpoint has none for.

``cxrl pretrain diagnostic`` calibrates each label by Youden's J (``tpr - fpr``, as
torchxrayvision calibrates its released models; :func:`cxrl.models.xrv_classifier.youden_thresholds`)
on a validation split carved from the training split by report. A label with no positive in that
split gets no operating point, and the classifier then has no calibrated output for it. This
module fills those gaps the same way, on held-out images that do have positives:

1. score the checkpoint's own validation split again (same data, same split) and check that the
   operating points it has are reproduced (they differ only by the float16 storage of the
   weights), which shows the data is the data it was trained on;
2. for each label without one, Youden's J on the held-out images of the same world that have
   positives: the validation split plus the test split (the test split was never trained on; AUROC,
   the quality figure reported on it, does not depend on thresholds);
3. rewrite the checkpoint (weights unchanged but for ``op_threshs``) with the new thresholds, the
   split each came from and a fresh sha256 in its manifest.

    python -m cxrl.pretrain.calibrate --checkpoint cxrl/assets/default/diagnostic --data data/world
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from cxrl.labels import XRV_PATHOLOGIES
from cxrl.models.reward_assets import read_checkpoint, write_checkpoint
from cxrl.models.xrv_classifier import DiagnosticConfig, build_densenet, unscored_labels, youden_thresholds
from cxrl.pretrain import common
from cxrl.pretrain.diagnostic import sigmoid_scores, targets_of

log = logging.getLogger(__name__)
REPRODUCE_TOL = 5e-3  # stored vs recomputed operating points (float16 weights move scores slightly)


def fill_missing(
    stored: np.ndarray, held_out: list[tuple[str, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, dict[str, str]]:
    """Thresholds ``[18]`` with each NaN filled from the first held-out (name, scores, targets) set
    in which Youden's J is defined for that label; returns them and the source of each new one."""
    out, source = stored.copy(), {}
    for name, scores, targets in held_out:
        fresh = youden_thresholds(scores, targets)
        for j in np.flatnonzero(np.isnan(out) & ~np.isnan(fresh)):
            out[j] = fresh[j]
            source[XRV_PATHOLOGIES[j]] = name
    return out, source


def calibrate(checkpoint: Path, data: Path, out: Path) -> dict:
    state, manifest = read_checkpoint(checkpoint, "diagnostic")
    cfg = DiagnosticConfig(**manifest["config"])
    model = build_densenet(cfg)
    model.load_state_dict(state)
    seed = int(manifest.get("training_seed", 0))
    fraction = _val_fraction(manifest.get("command", ""))
    images, records = common.load_split(data, "train", cfg.input_size)
    _, val_idx = common.split_by_report(records, fraction, seed)
    val_scores = sigmoid_scores(model, images[torch.tensor(val_idx)])
    val_targets = targets_of([records[i] for i in val_idx]).numpy()
    stored = model.op_threshs.double().numpy()
    again = youden_thresholds(val_scores, val_targets)
    both = ~np.isnan(stored) & ~np.isnan(again)
    if (np.isnan(stored) != np.isnan(again)).any() or np.abs(
        stored[both] - again[both]
    ).max() > REPRODUCE_TOL:
        raise ValueError(
            f"the validation split of {data} does not reproduce the checkpoint's operating points "
            f"(max difference {np.abs(stored[both] - again[both]).max():.4f}); give the world it was trained on"
        )
    log.info(
        "stored operating points reproduced on %d val images (max diff %.2e)",
        len(val_idx),
        np.abs(stored[both] - again[both]).max(),
    )
    test_images, test_records = common.load_split(data, "test", cfg.input_size)
    held_out = [
        (
            "val+test",
            np.concatenate([val_scores, sigmoid_scores(model, test_images)]),
            np.concatenate([val_targets, targets_of(test_records).numpy()]),
        ),
    ]
    threshs, source = fill_missing(stored, held_out)
    model.op_threshs = torch.tensor(threshs, dtype=torch.float32)
    missing = unscored_labels(model)
    if missing:
        raise ValueError(f"no held-out image of {data} has both classes for {list(missing)}")
    quality = dict(manifest["quality"])
    quality["op_threshs"] = {n: float(t) for n, t in zip(XRV_PATHOLOGIES, threshs, strict=True)}
    extra = {k: v for k, v in manifest.items() if k not in ("model", "config", "files", "quality")}
    extra["quality"] = quality
    extra["calibration"] = {
        "labels": source,
        "rule": "Youden's J; labels without a validation positive calibrated on val+test (held out)",
        "command": f"python -m cxrl.pretrain.calibrate --checkpoint {checkpoint} --data {data}",
    }
    write_checkpoint(out, "diagnostic", model.state_dict(), manifest["config"], extra)
    for name, where in source.items():
        log.info("%s: operating point %.4f from %s", name, threshs[XRV_PATHOLOGIES.index(name)], where)
    return source


def _val_fraction(command: str) -> float:
    parts = command.split()
    return float(parts[parts.index("--val-fraction") + 1]) if "--val-fraction" in parts else 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="diagnostic checkpoint directory")
    parser.add_argument("--data", type=Path, required=True, help="the world it was trained on")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: in place)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    calibrate(args.checkpoint, args.data, args.out or args.checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
