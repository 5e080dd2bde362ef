import math

import pytest
import torch

from cxrl.labels import XRV_PATHOLOGIES
from cxrl.models.xrv_classifier import DiagnosticConfig, build_densenet
from cxrl.rewards.diagnostic import DiagnosticScorer, diagnostic_accuracy, report_targets
from cxrl.rewards.types import ModelInfo

NAN = math.nan
EFF, EDE, CAR = (XRV_PATHOLOGIES.index(n) for n in ("Effusion", "Edema", "Cardiomegaly"))


def test_report_targets_count_stated_labels_and_no_finding_negatives():
    t = report_targets({"Effusion": 1, "Edema": 0, "Pneumonia": -1, "Support Devices": 1})
    assert t[EFF] == 1 and t[EDE] == 0
    assert torch.isnan(t).sum() == 16  # uncertain and unmentioned do not count
    normal = report_targets({"No Finding": 1})
    assert torch.equal(normal, torch.zeros(18))
    assert torch.isnan(report_targets({})).all()


def test_accuracy_hand_computed():
    probs = torch.full((3, 18), 0.2)
    probs[0, EFF] = 0.7  # right (positive)
    probs[0, EDE] = 0.5  # wrong: 0.5 is the operating point, counts as positive
    probs[1, CAR] = NAN  # no operating point: does not count
    targets = torch.full((3, 18), NAN)
    targets[0, EFF], targets[0, EDE], targets[0, CAR] = 1, 0, 0  # 2 of 3 right
    targets[1, CAR], targets[1, EFF] = 1, 1  # Cardiomegaly ignored, Effusion wrong -> 0
    acc = diagnostic_accuracy(probs, targets)  # row 2: nothing countable -> 1
    assert torch.allclose(acc, torch.tensor([2 / 3, 0.0, 1.0]))


class FixedModel(torch.nn.Module):
    """Returns fixed calibrated outputs whatever the image (like xrv with op_threshs)."""

    def __init__(self, row: torch.Tensor):
        super().__init__()
        self.row = row
        self.op_threshs = torch.full((18,), 0.5)
        self.classifier = torch.nn.Linear(1, 18)
        self.targets = list(XRV_PATHOLOGIES)

    def forward(self, x):
        return self.row.expand(x.shape[0], -1)


def test_scorer_labels_reports_with_the_labeler_and_caches():
    row = torch.full((18,), 0.1)
    row[EFF] = 0.9
    calls = []

    def labeler(text):
        calls.append(text)
        return {"Effusion": 1} if "effusion" in text else {"Effusion": 0, "Edema": 0}

    scorer = DiagnosticScorer(FixedModel(row), ModelInfo("m", "v", "0"), input_size=32, labeler=labeler)
    out = scorer(torch.rand(3, 1, 48, 48), ["left effusion", "clear", "left effusion"])
    assert torch.allclose(out.diag_acc, torch.tensor([1.0, 0.5, 1.0]))
    assert out.diag_probs.shape == (3, 18)
    assert calls == ["left effusion", "clear"]
    with pytest.raises(ValueError, match="one report per image"):
        scorer(torch.rand(2, 1, 32, 32), ["a"])


def test_scorer_on_a_small_densenet_gives_nan_where_no_operating_point():
    threshs = torch.full((18,), 0.3)
    threshs[CAR] = NAN
    model = build_densenet(DiagnosticConfig(growth_rate=4, block_config=(2, 2), num_init_features=8), threshs)
    scorer = DiagnosticScorer(model, ModelInfo("m", "v", "0"), 32, labeler=lambda t: {"Cardiomegaly": 1})
    out = scorer(torch.rand(2, 1, 40, 40), ["a", "b"])
    assert torch.isnan(out.diag_probs[:, CAR]).all() and not torch.isnan(out.diag_probs[:, EFF]).any()
    assert torch.equal(out.diag_acc, torch.ones(2))  # only label stated has no operating point
