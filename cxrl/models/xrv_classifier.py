"""Diagnostic classifier: torchxrayvision's DenseNet, real weights or a small default-world config.

Real world: ``xrv.models.DenseNet(weights="densenet121-res224-all", cache_dir=DIR)`` read from a
local cache directory through torchxrayvision's own loader (we check that the file is there
first, so nothing is ever downloaded). Default world: the same class with a small
configuration and our 18 pathologies, with per-label operating thresholds in its
``op_threshs`` buffer so that torchxrayvision's ``op_norm`` maps each threshold to 0.5.

Operating points follow torchxrayvision's calibration: the ROC point maximising
``tpr - fpr`` (Youden's J) on a validation split, in sigmoid-probability space.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torchxrayvision as xrv
from pydantic import Field
from sklearn.metrics import roc_curve

from cxrl import imaging
from cxrl.config import ConfigModel
from cxrl.labels import XRV_PATHOLOGIES
from cxrl.models.safe_load import load_weights

log = logging.getLogger(__name__)

REAL_WEIGHTS: tuple[str, ...] = tuple(k for k in xrv.models.model_urls if k.startswith("densenet121"))


class DiagnosticConfig(ConfigModel):
    """Architecture of the small default-world DenseNet (xrv.models.DenseNet arguments)."""

    growth_rate: int = Field(12, ge=1, description="DenseNet growth rate (channels added per layer)")
    block_config: tuple[int, ...] = Field((3, 6, 8, 6), description="layers in each dense block")
    num_init_features: int = Field(24, ge=1, description="channels of the stem convolution")
    bn_size: int = Field(4, ge=1, description="bottleneck width multiplier")
    input_size: int = Field(128, ge=16, description="square input resolution in pixels")


def build_densenet(cfg: DiagnosticConfig, op_threshs: torch.Tensor | None = None) -> xrv.models.DenseNet:
    """A randomly initialised xrv DenseNet with our 18 pathologies (optionally with operating points)."""
    if op_threshs is None:
        op_threshs = torch.full((len(XRV_PATHOLOGIES),), float("nan"))
    return xrv.models.DenseNet(
        growth_rate=cfg.growth_rate,
        block_config=tuple(cfg.block_config),
        num_init_features=cfg.num_init_features,
        bn_size=cfg.bn_size,
        num_classes=len(XRV_PATHOLOGIES),
        weights=None,
        op_threshs=op_threshs.float(),
    )


def xrv_weights_path(weights: str, cache_dir: str | Path) -> Path:
    """Where torchxrayvision looks for ``weights`` in ``cache_dir`` (the URL's file name)."""
    if weights not in REAL_WEIGHTS:
        raise ValueError(f"unknown torchxrayvision weights {weights!r}; use one of {', '.join(REAL_WEIGHTS)}")
    url = xrv.models.model_urls[weights]["weights_url"]
    return Path(os.path.expanduser(str(cache_dir))) / os.path.basename(url)


# The classes a torchxrayvision release file (a whole pickled DenseNet) may hold; nothing else is built.
XRV_ALLOWED_CLASSES = (
    xrv.models.DenseNet,
    xrv.models._DenseBlock,
    xrv.models._DenseLayer,
    xrv.models._Transition,
    torch.nn.Sequential,
    torch.nn.Conv2d,
    torch.nn.BatchNorm2d,
    torch.nn.ReLU,
    torch.nn.MaxPool2d,
    torch.nn.AvgPool2d,
    torch.nn.Linear,
)


def load_xrv_densenet(weights: str, cache_dir: str | Path, sha256: str | None = None) -> xrv.models.DenseNet:
    """Load released torchxrayvision DenseNet weights from a local ``cache_dir``; never downloads.

    The file (a pickled DenseNet) is read weights-only, building only ``XRV_ALLOWED_CLASSES``, after
    its ``sha256`` is checked when one is pinned (``cxrl.models.safe_load``); the model is then set
    up as ``xrv.models.DenseNet(weights=...)`` sets it up (labels, operating points, resolution).
    """
    path = xrv_weights_path(weights, cache_dir)
    meta = xrv.models.model_urls[weights]
    if not path.is_file():
        raise ValueError(
            f"torchxrayvision weights {weights!r} not found at {path}; "
            f"download {meta['weights_url']} there on a machine with internet access"
        )
    saved = load_weights(path, "torchxrayvision weights", XRV_ALLOWED_CLASSES, sha256)
    state = saved.state_dict() if isinstance(saved, torch.nn.Module) else saved
    model = xrv.models.DenseNet(num_classes=len(meta["labels"]))
    model.load_state_dict(state)
    model.weights, model.targets, model.pathologies = weights, meta["labels"], meta["labels"]
    if "op_threshs" in meta:
        model.op_threshs = torch.tensor(meta["op_threshs"])
    if "input_resolution" in meta:
        model.input_resolution = meta["input_resolution"]
    return model.eval()


def model_targets(model: xrv.models.DenseNet) -> list[str]:
    """The label each output of ``model`` predicts ('' where it predicts none)."""
    targets = list(getattr(model, "targets", XRV_PATHOLOGIES))
    if len(targets) != model.classifier.out_features:
        raise ValueError(f"model has {model.classifier.out_features} outputs but {len(targets)} targets")
    return targets


def predict_probs(model: xrv.models.DenseNet, images: torch.Tensor, size: int) -> torch.Tensor:
    """images ``[B,1,H,W]`` in [0,1] -> calibrated probabilities ``[B,18]`` in XRV_PATHOLOGIES order.

    0.5 is each label's operating point; NaN where the model has no output or no operating
    point for a label.
    """
    x = imaging.to_xrv(images, size=size)  # [B,1,size,size] in [-1024,1024]
    out = model(x)  # [B,K], op_norm applied inside when op_threshs is set
    threshs = getattr(model, "op_threshs", None)
    if threshs is None:
        raise ValueError("the classifier has no operating points (op_threshs); calibrate it first")
    probs = torch.full((x.shape[0], len(XRV_PATHOLOGIES)), float("nan"))
    for k, name in enumerate(model_targets(model)):
        if name in XRV_PATHOLOGIES and not torch.isnan(threshs[k]):
            probs[:, XRV_PATHOLOGIES.index(name)] = out[:, k].float().cpu()
    return probs


def unscored_labels(model: torch.nn.Module) -> tuple[str, ...]:
    """The XRV_PATHOLOGIES ``model`` cannot score: no output for the label, or no operating point.

    Released xrv weights trained on one dataset have empty targets for labels it lacks (e.g.
    ``densenet121-res224-nih`` has 4); their columns of :func:`predict_probs` are NaN inside the
    library and are left out of API responses, which declare them instead.
    """
    threshs = getattr(model, "op_threshs", None)
    scored = {
        name
        for k, name in enumerate(model_targets(model))
        if name in XRV_PATHOLOGIES and threshs is not None and not torch.isnan(threshs[k])
    }
    return tuple(n for n in XRV_PATHOLOGIES if n not in scored)


def logits(model: xrv.models.DenseNet, x: torch.Tensor) -> torch.Tensor:
    """Raw classifier logits ``[B,K]`` for xrv-range inputs ``x`` (no sigmoid, no op_norm): for training."""
    return model.classifier(model.features2(x))


def youden_thresholds(scores: np.ndarray, targets: np.ndarray, min_positives: int = 1) -> np.ndarray:
    """Per-label operating points in probability space maximising ``tpr - fpr``.

    ``scores`` ``[N,L]`` sigmoid probabilities, ``targets`` ``[N,L]`` with 1/0 and NaN = unknown.
    Labels with fewer than ``min_positives`` positives or no negatives get NaN (no operating point).
    """
    threshs = np.full(scores.shape[1], np.nan, dtype=np.float64)
    for j in range(scores.shape[1]):
        known = ~np.isnan(targets[:, j])
        y, s = targets[known, j], scores[known, j]
        if (y == 1).sum() < min_positives or (y == 0).sum() == 0:
            continue
        fpr, tpr, thr = roc_curve(y, s)
        best = int(np.argmax(tpr - fpr))
        threshs[j] = float(np.clip(thr[best], 1e-6, 1 - 1e-6))
    return threshs
