"""`cxrl pretrain generator` on a small dataset directory, and the report tokenizer."""

import argparse
import csv
import json

import pytest
import torch
from transformers import CLIPTokenizer

from cxrl import imaging
from cxrl.infra.hashing import sha256_file
from cxrl.models.generator import load_pipeline, tiny_arch
from cxrl.pretrain.generator import register_pretrain
from cxrl.pretrain.vocab import train_tokenizer
from cxrl.rl.policy import Policy

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary abnormality.",
    "Cardiomegaly. Right lower lobe opacity.",
    "Right upper lobe nodule measuring 1.5 cm.",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A dataset directory in the world format: metadata.csv + PNGs (bright disc = 'heart')."""
    root = tmp_path_factory.mktemp("world")
    (root / "images").mkdir()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="ij")
    rows = []
    for i in range(16):
        r = 0.3 + 0.03 * (i % 5)
        image = ((xx**2 + yy**2) < r**2).float()[None] * 0.8 + 0.1  # [1, 48, 48]
        name = f"images/train-{i:03d}.png"
        imaging.save_image(image, root / name)
        rows.append(
            {"id": f"train-{i:03d}", "split": "train", "image": name, "report": REPORTS[i % 4], "view": "PA"}
        )
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_tokenizer_is_a_clip_tokenizer_with_learned_merges(tmp_path):
    tok = train_tokenizer(REPORTS * 10, tmp_path, vocab_size=600, max_length=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "vocab.json"]
    reloaded = CLIPTokenizer.from_pretrained(str(tmp_path))
    ids = reloaded("Pleural effusion, 2 cm.").input_ids
    assert ids == tok("Pleural effusion, 2 cm.").input_ids
    assert reloaded.convert_ids_to_tokens(ids)[1:3] == ["pleural</w>", "effusion</w>"]  # whole words learned
    assert reloaded.decode(ids, skip_special_tokens=True) == "pleural effusion , 2 cm ."
    unseen = reloaded("Ünseen wörds ok").input_ids  # any text maps to byte symbols, never fails
    assert reloaded.unk_token_id not in unseen[1:-1]
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(REPORTS, tmp_path, vocab_size=100)


def test_pretrain_command_writes_a_loadable_pipeline(dataset, tmp_path):
    arch = tiny_arch().model_dump(mode="json")
    config = tmp_path / "pretrain.yaml"
    config.write_text(json.dumps({"arch": arch, "vocab_size": 600, "batch_size": 4, "warmup_steps": 2}))
    parser = argparse.ArgumentParser()
    register_pretrain(parser.add_subparsers())
    out = tmp_path / "generator"
    args = parser.parse_args(
        ["generator", "--data", str(dataset), "--out", str(out), "--config", str(config), "--threads", "1"]
        + ["--set", "vae_steps=3", "unet_steps=3", "grid_steps=2", "vae_crop=16"]
    )
    assert args.func(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == {"vae": 3, "unet": 3} and manifest["seed"] == 0
    assert manifest["command"].startswith("cxrl ")
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    assert "unet/diffusion_pytorch_model.safetensors" in manifest["files"]
    grid = imaging.load_image(out / "samples.png")
    assert grid.shape == (1, 4 * 32, 8 * 32)  # real, reconstructed, two sample rows; 8 reports
    pipe = load_pipeline(out)
    assert pipe.vae.config.scaling_factor != 1.0  # set from the latents' spread
    assert len(pipe.tokenizer) > 514  # learned merges
    from safetensors import safe_open

    with safe_open(out / "unet" / "diffusion_pytorch_model.safetensors", "pt") as fh:
        assert fh.get_tensor(next(iter(fh.keys()))).dtype == torch.float16
    policy = Policy(pipe, lora_rank=0, ace_tokens=0)
    assert policy.encode_prompts(["pleural effusion"]).shape == (1, 32, 16)

    # continue training the UNet only: the autoencoder and its latent scale stay as they were
    more = tmp_path / "generator2"
    args = parser.parse_args(
        ["generator", "--data", str(dataset), "--out", str(more), "--config", str(config), "--init", str(out)]
        + ["--threads", "1", "--set", "vae_steps=0", "unet_steps=2", "grid_steps=2"]
    )
    assert args.func(args) == 0
    second = json.loads((more / "manifest.json").read_text())
    assert second["steps"] == {"vae": 0, "unet": 2} and second["init"]["steps"] == {"vae": 3, "unet": 3}
    assert (
        second["files"]["vae/diffusion_pytorch_model.safetensors"]
        == manifest["files"]["vae/diffusion_pytorch_model.safetensors"]
    )
    assert (
        second["files"]["unet/diffusion_pytorch_model.safetensors"]
        != manifest["files"]["unet/diffusion_pytorch_model.safetensors"]
    )


def test_pretrain_rejects_a_missing_dataset(tmp_path):
    parser = argparse.ArgumentParser()
    register_pretrain(parser.add_subparsers())
    args = parser.parse_args(["generator", "--data", str(tmp_path), "--out", str(tmp_path / "g")])
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        args.func(args)
