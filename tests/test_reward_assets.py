import json

import pytest
import torch

from cxrl.infra.hashing import sha256_file
from cxrl.models.reward_assets import read_checkpoint, write_checkpoint


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


def test_a_tampered_or_missing_file_is_refused_with_its_name(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    write_checkpoint(tmp_path, "posture", {"w": torch.zeros(4)}, {}, {})
    read_checkpoint(tmp_path, "posture")  # intact: loads
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors has sha256 .* changed after"):
        read_checkpoint(tmp_path, "posture")
    write_checkpoint(tmp_path, "posture", {"w": torch.zeros(4)}, {}, {})
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # a tokenizer file counts too
    with pytest.raises(ValueError, match="vocab.txt has sha256"):
        read_checkpoint(tmp_path, "posture")
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(ValueError, match="vocab.txt is listed .* but missing"):
        read_checkpoint(tmp_path, "posture")


def test_committed_default_checkpoints_match_their_manifests():
    from cxrl.models.reward_assets import DEFAULT_ASSETS

    for model in ("posture", "diagnostic", "clip"):
        _, manifest = read_checkpoint(DEFAULT_ASSETS / model, model)  # verifies every file's sha256
        assert "model.safetensors" in manifest["files"]
