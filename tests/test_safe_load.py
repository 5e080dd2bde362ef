"""Pickled release weights (torchxrayvision .pt, CXR-CLIP .tar): a tampered file is refused before it
can run code, with files written here in each release's real format (cxrl.models.safe_load)."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torchxrayvision as xrv

from cxrl.infra.hashing import sha256_file
from cxrl.models.cxr_clip import load_release
from cxrl.models.safe_load import UntrustedWeightsError, load_weights
from cxrl.models.xrv_classifier import load_xrv_densenet, xrv_weights_path

WEIGHTS = "densenet121-res224-all"


class Payload:
    """What an attacker hides in a pickle: unpickling it calls ``Path.touch`` on ``marker``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def no_download(monkeypatch):
    monkeypatch.setattr(xrv.utils, "download", lambda *a, **k: pytest.fail("tried to download"))


def _xrv_release(tmp_path, payload: Payload | None = None) -> pathlib.Path:
    torch.manual_seed(0)
    model = xrv.models.DenseNet()  # torchxrayvision ships a whole pickled DenseNet
    if payload is not None:
        model.extra = payload
    path = xrv_weights_path(WEIGHTS, tmp_path)
    torch.save(model, path)
    return path


@pytest.mark.slow  # the 224 px DenseNet-121
def test_a_tampered_xrv_file_is_refused_and_never_runs_its_payload(tmp_path, no_download):
    marker = tmp_path / "pwned"
    path = _xrv_release(tmp_path, Payload(marker))
    with torch.serialization.safe_globals([]):  # the attack is real: a full load runs it
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(
        UntrustedWeightsError, match=r"holds Python objects .*\(GLOBAL getattr\).*pin its digest"
    ):
        load_xrv_densenet(WEIGHTS, tmp_path)
    assert not marker.exists()


@pytest.mark.slow  # the 224 px DenseNet-121
def test_a_pinned_digest_is_checked_before_reading(tmp_path, no_download):
    path = _xrv_release(tmp_path)
    good = sha256_file(path)
    model = load_xrv_densenet(WEIGHTS, tmp_path, sha256=good)
    assert model.targets == xrv.models.model_urls[WEIGHTS]["labels"]
    marker = tmp_path / "pwned"
    _xrv_release(tmp_path, Payload(marker))  # swapped for a tampered file after pinning
    with pytest.raises(
        UntrustedWeightsError, match=rf"has sha256 [0-9a-f]{{64}}, but the config pins {good}"
    ):
        load_xrv_densenet(WEIGHTS, tmp_path, sha256=good)
    assert not marker.exists()


def test_a_tampered_cxr_clip_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    config = {"base": {"image_size": 224}, "model": {"name": "clip_custom"}}
    path = tmp_path / "r50_mcc.tar"
    torch.save({"config": config, "model": {"logit_scale": torch.tensor(2.0)}, "hook": Payload(marker)}, path)
    with pytest.raises(UntrustedWeightsError, match="CXR-CLIP checkpoint .* holds Python objects"):
        load_release(path)
    assert not marker.exists()
    plain = tmp_path / "plain.tar"  # the release format (plain dicts and tensors) reads weights-only
    torch.save({"config": config, "model": {"w": torch.ones(2)}, "epoch": 3}, plain)
    assert torch.equal(load_weights(plain, "test", sha256=sha256_file(plain))["model"]["w"], torch.ones(2))
