import json

import pytest
import torch

from cxrl.models.reward_assets import read_checkpoint, sha256_file, write_checkpoint


def test_checkpoint_round_trip_halves_large_tensors_and_hashes_every_file(tmp_path):
    state = {
        "big": torch.randn(64, 32),
        "small": torch.tensor([0.123456789, float("nan")]),
        "steps": torch.tensor(7),
    }
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    manifest = write_checkpoint(tmp_path, "posture", state, {"input_size": 64}, {"quality": {"x": 1.0}})
    assert set(manifest["files"]) == {"model.safetensors", "vocab.txt"}
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["files"]["model.safetensors"] == sha256_file(tmp_path / "model.safetensors")
    loaded, again = read_checkpoint(tmp_path, "posture")
    assert again == manifest and loaded["big"].dtype == torch.float32
    assert torch.allclose(loaded["big"], state["big"], atol=2e-3) and not torch.equal(
        loaded["big"], state["big"]
    )
    assert loaded["small"][0] == state["small"][0] and torch.isnan(loaded["small"][1])  # small stay float32
    assert loaded["steps"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_wrong_or_missing_checkpoint_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a reward checkpoint"):
        read_checkpoint(tmp_path, "clip")
    write_checkpoint(tmp_path, "posture", {"w": torch.zeros(2)}, {}, {})
    with pytest.raises(ValueError, match="expected 'clip'"):
        read_checkpoint(tmp_path, "clip")
