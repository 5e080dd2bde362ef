"""Diagnostic scorer: the classifier's calibrated outputs against the report's labels (CXRL Sec. 2.3).

``acc(x)`` is the share of the report's countable labels that the classifier gets right:

- countable: the 18 classifier pathologies the report states as positive (1) or negative (0);
  uncertain (-1) and unmentioned labels do not count, except that a report labelled
  "No Finding" = 1 states every pathology it does not mention as negative;
- labels for which the classifier has no output or no operating point do not count: they are
  NaN in ``diag_probs`` here and listed in the scorer's ``info.unscored_labels``; API responses
  leave them out of ``diag_labels``/``diag_probs`` and declare them in the model's info;
- the classifier says positive when its calibrated output is >= 0.5 (its operating point);
- a report with no countable label gives acc = 1 (nothing to get wrong; the RLCF difference
  to the anchor is then 0).

``r_diag = acc(x) - acc(x_anchor)`` is formed by cxrl.rewards.types.combine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from cxrl.labels import NEGATIVE, NO_FINDING, POSITIVE, XRV_PATHOLOGIES
from cxrl.models.xrv_classifier import predict_probs, unscored_labels
from cxrl.rewards.types import Components, ModelInfo, check_images_reports

Labeler = Callable[[str], dict[str, int]]


def report_targets(labels: dict[str, int]) -> torch.Tensor:
    """A report's label dict -> targets ``[18]`` over XRV_PATHOLOGIES: 1, 0 or NaN (does not count)."""
    normal = labels.get(NO_FINDING) == POSITIVE
    out = torch.full((len(XRV_PATHOLOGIES),), float("nan"))
    for j, name in enumerate(XRV_PATHOLOGIES):
        value = labels.get(name)
        if value in (POSITIVE, NEGATIVE):
            out[j] = float(value)
        elif value is None and normal:
            out[j] = 0.0
    return out


def diagnostic_accuracy(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """probs ``[B,18]`` (0.5 = operating point, NaN = none), targets ``[B,18]`` (1/0/NaN) -> acc ``[B]``."""
    if probs.shape != targets.shape:
        raise ValueError(f"probs {list(probs.shape)} and targets {list(targets.shape)} differ in shape")
    counted = ~torch.isnan(targets) & ~torch.isnan(probs)  # [B,18]
    correct = ((probs >= 0.5).float() == targets) & counted
    n = counted.sum(dim=1)
    return torch.where(n > 0, correct.sum(dim=1) / n.clamp(min=1), torch.ones_like(n, dtype=torch.float32))


def default_labeler() -> Labeler:
    from cxrl.reports.labeler import ReportLabeler  # the project's report labeler

    return ReportLabeler()


class DiagnosticScorer:
    """(images ``[B,1,H,W]``, reports) -> Components(diag_acc ``[B]``, diag_probs ``[B,18]``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        input_size: int,
        labeler: Labeler | None = None,
        device: str = "cpu",
        max_batch: int = 64,
    ):
        self.model = model.to(device).eval()
        self.info = dataclasses.replace(info, unscored_labels=unscored_labels(model))  # declared in Info
        self.input_size = input_size
        self.labeler = labeler
        self.device = device
        self.max_batch = max_batch
        self._targets: dict[str, torch.Tensor] = {}

    def targets(self, reports: Sequence[str]) -> torch.Tensor:
        """Label each report (cached by text) -> ``[B,18]``."""
        if self.labeler is None:
            self.labeler = default_labeler()
        rows = []
        for text in reports:
            if text not in self._targets:
                if len(self._targets) > 100_000:
                    self._targets.clear()
                self._targets[text] = report_targets(self.labeler(text))
            rows.append(self._targets[text])
        return torch.stack(rows)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, reports: Sequence[str]) -> Components:
        check_images_reports(images, reports)
        probs = torch.cat(
            [
                predict_probs(self.model, chunk.to(self.device), self.input_size)
                for chunk in images.split(self.max_batch)
            ]
        )  # [B,18]
        return Components(diag_acc=diagnostic_accuracy(probs, self.targets(reports)), diag_probs=probs)
