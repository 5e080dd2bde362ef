"""Classification AUROC: per-label golden values, label selection, and target mapping."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from cxrl.eval import auroc
from cxrl.labels import XRV_PATHOLOGIES

L = len(XRV_PATHOLOGIES)
ATEL, CARDIO, EDEMA = (XRV_PATHOLOGIES.index(n) for n in ("Atelectasis", "Cardiomegaly", "Edema"))


def blank(n):
    return np.full((n, L), np.nan), np.full((n, L), np.nan)


def test_golden_single_label():
    probs, targets = blank(4)
    probs[:, ATEL] = [0.1, 0.4, 0.35, 0.8]
    targets[:, ATEL] = [0, 0, 1, 1]
    res = auroc.mean_auroc(probs, targets)
    assert res.mean == pytest.approx(0.75)
    assert res.n_labels == 1
    assert res.per_label["Atelectasis"] == pytest.approx(0.75)
    assert np.isnan(res.per_label["Edema"])


def test_mean_over_labels_with_both_classes_only():
    probs, targets = blank(6)
    probs[:, ATEL] = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]
    targets[:, ATEL] = [1, 1, 1, 0, 0, 0]  # perfect: 1.0
    probs[:, CARDIO] = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]
    targets[:, CARDIO] = [0, 0, 0, 1, 1, 1]  # inverted: 0.0
    probs[:, EDEMA] = [0.5] * 6
    targets[:, EDEMA] = [1] * 6  # one class only: skipped
    res = auroc.mean_auroc(probs, targets)
    assert res.n_labels == 2
    assert res.mean == pytest.approx(0.5)


def test_matches_torchmetrics_on_random_scores():
    rng = np.random.default_rng(0)
    n = 200
    probs = rng.random((n, L))
    targets = (rng.random((n, L)) < 0.3).astype(float)
    probs[:, :5] += targets[:, :5] * 0.3  # some signal in a few labels
    probs[rng.random((n, L)) < 0.1] = np.nan  # missing outputs are dropped per label
    targets[rng.random((n, L)) < 0.1] = np.nan
    res = auroc.mean_auroc(probs, targets)
    expected = []
    for j in range(L):
        keep = ~np.isnan(probs[:, j]) & ~np.isnan(targets[:, j])
        expected.append(
            float(binary_auroc(torch.from_numpy(probs[keep, j]), torch.from_numpy(targets[keep, j]).long()))
        )
    assert res.n_labels == L
    assert res.mean == pytest.approx(np.mean(expected), abs=1e-6)
    assert res.mean > 0.55  # the planted signal shows


def test_no_scorable_label_gives_nan():
    probs, targets = blank(3)
    probs[:, ATEL] = [0.2, 0.3, 0.4]
    targets[:, ATEL] = [0, 0, 0]
    res = auroc.mean_auroc(probs, targets)
    assert np.isnan(res.mean) and res.n_labels == 0


def test_label_targets_mapping():
    dicts = [{"Atelectasis": 1, "Edema": -1}, {"Atelectasis": 0, "No Finding": 1}, {}]
    t = auroc.label_targets(dicts)
    assert t.shape == (3, L)
    assert t[0, ATEL] == 1 and np.isnan(t[0, EDEMA])  # uncertain excluded
    assert t[1, ATEL] == 0
    assert t[2, CARDIO] == 0  # absent -> negative by default
    t = auroc.label_targets(dicts, uncertain="positive", absent="exclude")
    assert t[0, EDEMA] == 1
    assert np.isnan(t[2, CARDIO])
    assert auroc.label_targets(dicts, uncertain="negative")[0, EDEMA] == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="uncertain"):
        auroc.label_targets([{}], uncertain="maybe")
    with pytest.raises(ValueError, match="unknown label"):
        auroc.label_targets([{"Flu": 1}])
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        auroc.mean_auroc(np.zeros((3, L)), np.zeros((4, L)))
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        auroc.mean_auroc(np.zeros((2, L)), np.full((2, L), 2.0))


def test_rank_auc_equals_sklearn_roc_auc_with_ties():
    from sklearn.metrics import roc_auc_score

    from cxrl.eval.auroc import rank_auc

    rng = np.random.default_rng(0)
    for n in (2, 7, 40, 193):
        y = np.r_[0, 1, rng.integers(0, 2, size=n - 2)]
        s = np.round(rng.uniform(size=n), 1)  # many ties
        assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert rank_auc(np.array([0, 1, 0, 1]), np.array([0.2, 0.2, 0.1, 0.9])) == 0.875  # (2 + 1.5) / 4
