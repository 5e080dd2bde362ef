"""The reward models' quality functions, against values worked out by hand."""

import math
from types import SimpleNamespace

import numpy as np
import torch

from cxrl.pretrain.clip import pair_auroc
from cxrl.pretrain.diagnostic import auroc_table, masked_bce
from cxrl.pretrain.posture import quality


def psi_with_tx(tx):
    """psi rows with only a translation: r_align = -|tx|."""
    psi = torch.zeros(len(tx), 5)
    psi[:, 0] = psi[:, 1] = 1.0
    psi[:, 2] = torch.tensor(tx)
    return psi


def test_spearman_of_r_align_by_hand():
    truth = psi_with_tx([0.1, 0.2, 0.3, 0.4])  # r_align -0.1 > -0.2 > -0.3 > -0.4: ranks 4 3 2 1
    pred = psi_with_tx([0.1, 0.3, 0.2, 0.4])  # ranks 4 2 3 1: d = 0 1 1 0, sum d^2 = 2
    q = quality(pred, truth)
    assert math.isclose(q["spearman_r_align"], 1 - 6 * 2 / (4 * (16 - 1)), abs_tol=1e-9)  # 0.8
    assert math.isclose(q["mae_tx"], (0 + 0.1 + 0.1 + 0) / 4, abs_tol=1e-7)
    assert quality(truth, truth)["spearman_r_align"] == 1.0


class FakeClip:
    """Embeddings chosen by hand: image i (all pixels = i) -> IMG[i], report text -> TXT[text]."""

    IMG = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    TXT = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    cfg = SimpleNamespace(text_max_length=8)

    def eval(self):
        return self

    def encode_image(self, x):
        return self.IMG[(x.mean(dim=(1, 2, 3)) * 255).round().long()]

    def encode_text(self, tokens):
        return torch.stack([list(self.TXT.values())[i] for i in tokens["ids"]])


def fake_tokenizer(texts, **kw):
    return {"ids": torch.tensor([list(FakeClip.TXT).index(t) for t in texts])}


def test_matched_vs_mismatched_pair_auroc_by_hand():
    """Reports a, a, b, b (two label sets): a mismatched partner always has the other set's text.

    matched cosines 1, .6, 1, .6; mismatched 0, .8, 0, .8. Of the 16 (matched, mismatched) pairs the
    two 1s win all 8 and the two .6s win 4 (beat the 0s, lose to the .8s): AUROC 12/16 = 0.75.
    """
    records = [SimpleNamespace(report=r, labels={"Effusion": int(r == "b")}) for r in ("a", "a", "b", "b")]
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    q = pair_auroc(FakeClip(), fake_tokenizer, images, records, seed=0)
    assert math.isclose(q["matched_vs_mismatched_auroc"], 0.75)
    assert math.isclose(q["mean_cos_matched"], 0.8, abs_tol=1e-6)
    assert math.isclose(q["mean_cos_mismatched"], 0.4, abs_tol=1e-6)


def test_masked_bce_by_hand():
    """logit 0 -> BCE log 2 per target; positives weighted by pos_weight; NaN targets do not count."""
    logit = torch.tensor([[0.0, 0.0, 0.0], [math.log(3), 0.0, 5.0]])
    target = torch.tensor([[1.0, 0.0, float("nan")], [0.0, float("nan"), float("nan")]])
    pos_weight = torch.tensor([2.0, 1.0, 1.0])
    # known: (0,0) y=1 w=2 -> 2 log 2; (0,1) y=0 -> log 2; (1,0) y=0, sigmoid 0.75 -> -log 0.25
    want = (2 * math.log(2) + math.log(2) + math.log(4)) / 3
    assert math.isclose(float(masked_bce(logit, target, pos_weight)), want, rel_tol=1e-6)


def test_per_label_auroc_table_by_hand():
    scores = np.zeros((6, 18))
    targets = np.full((6, 18), np.nan)
    scores[:4, 0], targets[:4, 0] = [0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0]  # .9 beats 2, .4 beats 1: 3/4
    scores[:, 1], targets[:, 1] = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0, 0, 0, 1, 1, 1]  # perfect: 1.0
    targets[:2, 2] = [1, 0]  # one positive: below min_positives, left out
    scores[:3, 3], targets[:3, 3] = [0.1, 0.2, 0.3], [1, 1, 1]  # no negative: left out
    table = auroc_table(scores, targets, min_positives=2)
    assert table["auroc"] == {"Atelectasis": 0.75, "Consolidation": 1.0}
    assert math.isclose(table["mean_auroc"], 0.875)
