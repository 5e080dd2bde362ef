"""bench/bench_realsize.py at --smoke size: the real-size dry run's whole path (its SD-1.5 size takes
~25 min on 2 cores, far over a test's budget; docs/realsize.md has its figures)."""

import json

import pytest

from bench import bench_realsize


@pytest.mark.slow
@pytest.mark.service
def test_smoke_dry_run_resumes_exactly_and_its_lora_loads_into_plain_diffusers(tmp_path):
    assert bench_realsize.main(["--smoke", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "bench_realsize.json").read_text())
    assert out["resume"]["exact"] and out["epoch"]["dropped_images"] == 0
    lora = out["lora_plain_diffusers"]
    assert lora["matches"] and lora["max_abs_diff_vs_policy"] <= 1e-4 and lora["lora_changed_output"] > 0
    assert lora["lora_modules_loaded"] == out["lora"]["wrapped_modules"] > 0
    assert "pytorch_lora_weights.safetensors" in out["checkpoint_files"]
    assert out["projection"]["label"].startswith("PROJECTION")
    flops = out["flops_per_item"]
    assert flops["unet_forward_backward_per_row"] > flops["unet_forward_per_row"] > 0
