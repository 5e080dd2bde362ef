"""bench/gpu_check.py keeps working: its --smoke size runs the whole path on CPU (services, engine epoch)."""

import json

import pytest
import torch

from bench import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check runs for real")
def test_without_a_gpu_the_full_check_fails_with_exit_1(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
@pytest.mark.service
def test_smoke_check_runs_an_epoch_through_the_services(tmp_path, capsys):
    assert gpu_check.main(["--smoke", "--out", str(tmp_path), "--threads", "1"]) == 0
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert out["smoke"] and out["images"] == 2 and out["epoch_s"] > 0
    assert out["unet"]["sample"]["calls"] == 4  # policy + anchor, 2 steps each, guidance: 4 rows a call
    assert out["unet"]["sample"]["rows_per_call"] == 4
    assert out["unet"]["train"]["calls"] == 4  # 2 images x 2 steps, one image a call
    assert out["service_images_per_s"] > 0
    assert "seconds per epoch" in capsys.readouterr().out
