import math

import numpy as np
import pytest
import torch
import torchxrayvision as xrv

from cxrl import imaging
from cxrl.labels import XRV_PATHOLOGIES
from cxrl.models.xrv_classifier import (
    DiagnosticConfig,
    build_densenet,
    load_xrv_densenet,
    predict_probs,
    xrv_weights_path,
    youden_thresholds,
)


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torchxrayvision tried to download weights")

    monkeypatch.setattr(xrv.utils, "download", refuse)


@pytest.mark.slow  # the 224 px DenseNet-121
def test_released_weights_load_through_torchxrayvision_from_a_local_cache_dir(tmp_path, no_download):
    # torchxrayvision stores a whole pickled DenseNet under the URL's file name
    torch.manual_seed(0)
    reference = xrv.models.DenseNet()
    path = xrv_weights_path("densenet121-res224-all", tmp_path)
    assert (
        path.name
        == "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    )
    torch.save(reference, path)
    model = load_xrv_densenet("densenet121-res224-all", tmp_path)
    images = torch.rand(2, 1, 224, 224)
    probs = predict_probs(model, images, 224)
    with torch.no_grad():
        raw = torch.sigmoid(reference.eval()(imaging.to_xrv(images)))
    threshs = torch.tensor(xrv.models.model_urls["all"]["op_threshs"])
    expected = xrv.models.op_norm(raw, threshs)
    assert torch.allclose(probs, expected, atol=1e-5)


def test_missing_weights_are_a_value_error_not_a_download(tmp_path, no_download):
    with pytest.raises(ValueError, match="not found"):
        load_xrv_densenet("densenet121-res224-all", tmp_path)
    with pytest.raises(ValueError, match="unknown torchxrayvision weights"):
        load_xrv_densenet("densenet121-res999", tmp_path)


def test_operating_point_maps_to_one_half():
    threshs = torch.full((18,), 0.2)
    threshs[3] = math.nan
    model = build_densenet(DiagnosticConfig(growth_rate=4, block_config=(2, 2), num_init_features=8), threshs)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(math.log(0.2 / 0.8))  # sigmoid = 0.2 = the threshold
    probs = predict_probs(model, torch.rand(2, 1, 32, 32), 32)
    assert torch.isnan(probs[:, 3]).all()
    keep = [j for j in range(18) if j != 3]
    assert torch.allclose(probs[:, keep], torch.full((2, 17), 0.5), atol=1e-5)
    assert model.classifier.out_features == len(XRV_PATHOLOGIES)


def test_youden_thresholds_pick_the_separating_score():
    scores = np.array([[0.1, 0.5], [0.2, 0.5], [0.6, 0.5], [0.7, 0.5]])
    targets = np.array([[0, 1], [0, np.nan], [1, 0], [1, np.nan]], dtype=float)
    t = youden_thresholds(scores, targets, min_positives=1)
    assert t[0] == pytest.approx(0.6)
    t2 = youden_thresholds(scores, targets, min_positives=2)
    assert np.isnan(t2[1])  # one positive only
