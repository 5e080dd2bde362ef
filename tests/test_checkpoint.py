"""Checkpoints: diffusers-loadable LoRA, exact restore, atomic writes."""

import pytest
import torch

from cxrl.models.generator import Policy, build_pipeline, tiny_arch
from cxrl.rl import checkpoint as ckpt
from cxrl.rl.stat_tracker import PerPromptStatTracker

PROMPTS = ["small left pleural effusion.", "cardiomegaly."]


def trained_policy(seed: int = 0) -> Policy:
    policy = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=3, seed=seed)
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(torch.randn(p.shape) * 0.3)  # stands in for training: every LoRA/ACE value moves
    return policy


def write(policy: Policy, root, epoch: int = 1):
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-3)
    policy.ace.tokens.sum().backward()
    opt.step()
    tracker = PerPromptStatTracker(4, 2)
    tracker.update(["a", "b"], [1.0, 2.0])
    gen = torch.Generator().manual_seed(5)
    path = ckpt.save_checkpoint(root, epoch, policy, opt, gen, tracker.state_dict(), {"global_step": 7})
    return path, opt, gen


def unet_output(unet, embeds):
    x = torch.randn(len(embeds), 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return unet(x, torch.tensor([400] * len(embeds)), encoder_hidden_states=embeds).sample


def test_fresh_pipeline_loads_the_lora_with_diffusers(tmp_path):
    policy = trained_policy()
    path, _, _ = write(policy, tmp_path)
    embeds = policy.encode_prompts(PROMPTS)
    expected = unet_output(policy.unet, embeds)
    fresh = build_pipeline(tiny_arch(), seed=1)
    before = unet_output(fresh.unet, embeds)
    fresh.load_lora_weights(str(path))
    torch.testing.assert_close(unet_output(fresh.unet, embeds), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, expected)


def test_load_checkpoint_restores_everything_exactly(tmp_path):
    policy = trained_policy()
    path, opt, gen = write(policy, tmp_path)
    expected_draw = torch.randn(3, generator=gen)
    other = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=3, seed=9)
    other_opt = torch.optim.AdamW(other.trainable_parameters(), lr=1e-3)
    other_gen = torch.Generator().manual_seed(0)
    state, tracker = ckpt.load_checkpoint(path, other, other_opt, other_gen)
    for a, b in zip(policy.trainable_parameters(), other.trainable_parameters(), strict=True):
        assert torch.equal(a, b)
    assert state == {"epoch": 1, "global_step": 7}
    assert tracker["history"] == {"a": [1.0], "b": [2.0]}
    assert torch.equal(torch.randn(3, generator=other_gen), expected_draw)
    for s1, s2 in zip(opt.state.values(), other_opt.state.values(), strict=True):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"])


def test_latest_pointer_and_atomicity(tmp_path, monkeypatch):
    policy = trained_policy()
    assert ckpt.latest_checkpoint(tmp_path) is None
    first, _, _ = write(policy, tmp_path, epoch=1)
    assert ckpt.latest_checkpoint(tmp_path) == first

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write(policy, tmp_path, epoch=2)
    assert ckpt.latest_checkpoint(tmp_path) == first  # the pointer still names the complete one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000001", "latest"]  # no half-written dir


def test_mismatched_checkpoints_are_rejected(tmp_path):
    path, _, _ = write(trained_policy(), tmp_path)
    no_ace = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=0)
    with pytest.raises(ValueError, match="ACE disabled"):
        ckpt.load_ace(no_ace, path)
    with pytest.raises(ValueError, match="not a CXRL checkpoint"):
        ckpt.load_checkpoint(tmp_path, no_ace)
    (tmp_path / "latest").write_text("epoch-000099\n")
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.latest_checkpoint(tmp_path)
