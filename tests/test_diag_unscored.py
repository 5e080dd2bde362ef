"""A diagnostic label a model cannot score is declared, never sent as NaN (library -> API -> client)."""

import math

import torch

from cxrl.client import decode_components, decode_score_responses
from cxrl.labels import XRV_PATHOLOGIES
from cxrl.models.xrv_classifier import DiagnosticConfig, build_densenet
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.diagnostic import DiagnosticScorer
from cxrl.rewards.factory import random_scorers
from cxrl.rewards.types import ModelInfo
from services import codec

MASS, PT, EFF = (XRV_PATHOLOGIES.index(n) for n in ("Mass", "Pleural_Thickening", "Effusion"))


def partial_scorer() -> DiagnosticScorer:
    """Like released xrv weights of one dataset: no operating point for Mass, no output for Pleural_Thickening."""
    torch.manual_seed(0)
    threshs = torch.full((18,), 0.4)
    threshs[MASS] = float("nan")
    model = build_densenet(DiagnosticConfig(growth_rate=4, block_config=(2, 2), num_init_features=8), threshs)
    model.targets = [("" if j == PT else n) for j, n in enumerate(XRV_PATHOLOGIES)]
    return DiagnosticScorer(model, ModelInfo("xrv-part", "v", "0" * 64), 32, labeler=lambda t: {"Mass": 1})


def test_unscored_labels_are_declared_left_out_of_responses_and_restored_by_the_client():
    scorer = partial_scorer()
    assert scorer.info.unscored_labels == ("Pleural_Thickening", "Mass")  # XRV_PATHOLOGIES order
    images, reports = torch.rand(3, 1, 40, 40), ["mass", "mass", "mass"]
    out = scorer(images, reports)
    assert torch.isnan(out.diag_probs[:, [MASS, PT]]).all()  # in the library: "no output"
    assert torch.isfinite(out.diag_probs[:, EFF]).all()

    msg = codec.encode_predict_response("r", out, 3, scorer.info)
    assert list(msg.model.unscored_labels) == ["Pleural_Thickening", "Mass"]
    assert list(msg.diag_labels) == [n for n in XRV_PATHOLOGIES if n not in ("Mass", "Pleural_Thickening")]
    assert all(len(r.diag_probs) == 16 and all(math.isfinite(v) for v in r.diag_probs) for r in msg.results)
    back = decode_components(list(msg.results), list(msg.diag_labels))
    assert back.diag_probs.shape == (3, 18) and torch.isnan(back.diag_probs[:, [MASS, PT]]).all()
    keep = [j for j in range(18) if j not in (MASS, PT)]
    torch.testing.assert_close(back.diag_probs[:, keep], out.diag_probs[:, keep])

    # the gateway's response: the same columns, the declaration in the models list
    posture, _, consistency = random_scorers(0)
    result = InProcessRewards(posture, scorer, consistency).score(images, reports, images.flip(-1))
    score = codec.encode_score_response("s", result, {"align": 1.0, "diag": 10.0, "consist": 10.0})
    assert len(score.diag_labels) == 16
    assert [list(m.unscored_labels) for m in score.models if m.name == "xrv-part"] == [
        ["Pleural_Thickening", "Mass"]
    ]
    for item in score.results:
        assert all(math.isfinite(v) for v in [*item.policy.diag_probs, *item.anchor.diag_probs])
    decoded = decode_score_responses([score])
    assert decoded.policy.diag_probs.shape == (3, 18)
    assert [m.unscored_labels for m in decoded.models if m.name == "xrv-part"] == [
        ("Pleural_Thickening", "Mass")
    ]


def test_a_fully_calibrated_model_sends_all_18_labels():
    _, diagnostic, _ = random_scorers(0)
    assert diagnostic.info.unscored_labels == ()
    assert codec.diag_columns([diagnostic.info]) == (list(range(18)), tuple(XRV_PATHOLOGIES))
