"""Checkpoints: diffusers-loadable LoRA, exact restore, atomic writes, checksums and corruption."""

import hashlib
import json

import pytest
import torch

from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rl import checkpoint as ckpt
from cxrl.rl.policy import Policy
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


# -- corruption: every file is checked against the manifest's sha256 before anything is restored --


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))


def _garbage_json(path):
    path.write_text('{"epoch": 1, "global_st')


CORRUPTIONS = {
    "truncated-lora": (ckpt.LORA_FILE, _truncate, "truncated"),
    "flipped-ace": (ckpt.ACE_FILE, _flip, "sha256"),
    "flipped-optimizer": ("optimizer.pt", _flip, "sha256"),
    "missing-rng": ("rng.pt", lambda p: p.unlink(), "is missing"),
    "garbage-state": ("state.json", _garbage_json, "truncated|sha256"),
    "garbage-tracker": ("stat_tracker.json", lambda p: p.write_text("[1, 2"), "truncated|sha256"),
}


def _fresh() -> tuple[Policy, torch.optim.Optimizer, torch.Generator]:
    other = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=3, seed=9)
    return other, torch.optim.AdamW(other.trainable_parameters(), lr=1e-3), torch.Generator().manual_seed(0)


def test_manifest_lists_every_file_with_its_sha256(tmp_path):
    path, _, _ = write(trained_policy(), tmp_path)
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    names = sorted(p.name for p in path.iterdir() if p.name != ckpt.MANIFEST)
    assert sorted(manifest["files"]) == names
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()
        assert entry["bytes"] == (path / name).stat().st_size
    assert ckpt.verify_checkpoint(path) is True


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_file_is_named_and_nothing_is_restored(tmp_path, kind):
    name, damage, problem = CORRUPTIONS[kind]
    write(trained_policy(), tmp_path, epoch=1)
    path, _, _ = write(trained_policy(seed=1), tmp_path, epoch=2)
    damage(path / name)
    other, opt, gen = _fresh()
    before = [p.detach().clone() for p in other.trainable_parameters()]
    with pytest.raises(ckpt.CheckpointError, match=problem) as err:
        ckpt.load_checkpoint(path, other, opt, gen)
    message = str(err.value)
    assert str(path / name) in message
    # what to do: fall back to the previous checkpoint (named) or restore from a backup
    assert "epoch-000001" in message and "backup" in message
    assert all(torch.equal(a, b) for a, b in zip(before, other.trainable_parameters(), strict=True))
    assert opt.state_dict()["state"] == {}


def test_corrupt_lora_is_detected_by_the_policy_loaders_too(tmp_path):
    path, _, _ = write(trained_policy(), tmp_path)
    _flip(path / ckpt.LORA_FILE)
    other, _, _ = _fresh()
    with pytest.raises(ckpt.CheckpointError, match=ckpt.LORA_FILE):
        ckpt.load_lora(other, path)
    ckpt.load_ace(other, path)  # the ACE file itself is intact
    with pytest.raises(ckpt.CheckpointError, match="only checkpoint|from scratch"):
        ckpt.verify_checkpoint(path)


def test_damaged_manifest_is_reported(tmp_path):
    path, _, _ = write(trained_policy(), tmp_path)
    for junk in ("not json", '{"files": []}', '{"files": {"state.json": {"sha256": "ab"}}}'):
        (path / ckpt.MANIFEST).write_text(junk)
        with pytest.raises(ckpt.CheckpointError, match="manifest.json is not a valid manifest"):
            ckpt.load_checkpoint(path, _fresh()[0])


def test_checkpoints_without_manifest_still_load_and_parse_errors_are_clear(tmp_path):
    policy = trained_policy()
    path, _, _ = write(policy, tmp_path)
    (path / ckpt.MANIFEST).unlink()  # as written before manifests existed
    other, opt, gen = _fresh()
    state, _ = ckpt.load_checkpoint(path, other, opt, gen)
    assert state["epoch"] == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(policy.trainable_parameters(), other.trainable_parameters(), strict=True)
    )
    assert ckpt.verify_checkpoint(path) is False
    for name, damage in ((ckpt.ACE_FILE, _truncate), ("state.json", _garbage_json)):
        damage(path / name)
        with pytest.raises(ckpt.CheckpointError, match=f"{name} cannot be read"):
            ckpt.load_checkpoint(path, _fresh()[0])


def test_damaged_latest_pointer_names_the_fix(tmp_path):
    write(trained_policy(), tmp_path, epoch=3)
    for junk in ("", "\x00\xff garbage", "../../etc"):
        (tmp_path / "latest").write_text(junk)
        with pytest.raises(ckpt.CheckpointError, match="latest is damaged.*write 'epoch-000003'"):
            ckpt.latest_checkpoint(tmp_path)


def test_remove_partial_clears_what_an_interrupted_save_leaves(tmp_path):
    path, _, _ = write(trained_policy(), tmp_path)
    partial = tmp_path / ".tmp-epoch-000002-abc123"
    partial.mkdir()
    (partial / ckpt.LORA_FILE).write_bytes(b"half")
    (tmp_path / ".latest-xyz").write_text("epoch-000002\n")
    assert ckpt.latest_checkpoint(tmp_path) == path  # ignored by the pointer
    removed = ckpt.remove_partial(tmp_path)
    assert sorted(p.name for p in removed) == [".latest-xyz", ".tmp-epoch-000002-abc123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000001", "latest"]
    assert ckpt.remove_partial(tmp_path / "nowhere") == []


def test_every_file_and_directory_is_fsynced_before_the_latest_pointer_moves(tmp_path, monkeypatch):
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path, _, _ = write(trained_policy(), tmp_path, epoch=3)
    moved = events.index(("replace", str(tmp_path / ckpt.LATEST)))
    synced = {name for kind, name in events[:moved] if kind == "fsync"}
    tmp_dirs = {
        os.path.dirname(n) for n in synced if os.path.basename(os.path.dirname(n)).startswith(".tmp-epoch-")
    }
    assert len(tmp_dirs) == 1  # the files were flushed where they were written, before the rename
    (tmp_dir,) = tmp_dirs
    assert {f"{tmp_dir}/{p.name}" for p in path.iterdir()} <= synced  # every file of the checkpoint
    assert str(tmp_path) in synced  # the directory entry of the renamed checkpoint
    assert ("fsync", str(tmp_path)) in events[moved + 1 :]  # and the pointer's own rename after it


# -- bounded checkpoints: the newest K kept, the history stored once -------------------------------
def _epochs(policy: Policy, root, epochs: int, keep: int | None) -> list[int]:
    """Checkpoints of ``epochs`` epochs with a growing history; the bytes under ``root`` after each."""
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(5)
    history, sizes = [], []
    for epoch in range(epochs):
        history.append({"epoch": epoch, "policy/total": 0.125 + epoch % 7, "loss": -0.5})
        state = {"global_step": epoch + 1, "history": history, "config": {"checkpoint_keep": keep}}
        ckpt.save_checkpoint(root, epoch + 1, policy, opt, gen, {}, state)
        sizes.append(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()))
    return sizes


def test_only_the_newest_checkpoints_are_kept_and_disk_use_grows_linearly(tmp_path):
    policy = trained_policy()
    sizes = _epochs(policy, tmp_path / "bounded", 9, keep=2)
    root = tmp_path / "bounded"
    assert sorted(p.name for p in root.iterdir()) == ["epoch-000008", "epoch-000009", ckpt.HISTORY, "latest"]
    # the history is stored once: no checkpoint carries it, each reads back its own epochs
    assert all("history" not in json.loads((d / "state.json").read_text()) for d in root.glob("epoch-*"))
    assert [m["epoch"] for m in ckpt.checkpoint_history(root / "epoch-000008")] == list(range(8))
    state, _ = ckpt.load_checkpoint(root / "epoch-000009", _fresh()[0])
    assert [m["epoch"] for m in state["history"]] == list(range(9)) and "history_sha256" not in state
    # once K checkpoints exist, each epoch adds one history entry's bytes: linear, not quadratic
    growth = [b - a for a, b in zip(sizes[2:], sizes[3:], strict=False)]
    assert max(growth) - min(growth) <= 2 and 0 < max(growth) < 200, growth
    # keeping every checkpoint (the old behaviour) grows by a whole checkpoint each epoch
    unbounded = _epochs(policy, tmp_path / "all", 4, keep=None)
    assert unbounded[3] - unbounded[2] > 10 * max(growth)


def test_a_checkpoint_whose_history_was_altered_is_refused_with_the_fallback(tmp_path):
    _epochs(trained_policy(), tmp_path, 3, keep=2)
    history = json.loads((tmp_path / ckpt.HISTORY).read_text())
    history[1]["policy/total"] = 99.0
    (tmp_path / ckpt.HISTORY).write_text(json.dumps(history))
    with pytest.raises(ckpt.CheckpointError, match="does not hold the 3 epoch.*epoch-000002") as err:
        ckpt.load_checkpoint(tmp_path / "epoch-000003", _fresh()[0])
    assert "history.json" in str(err.value)
    (tmp_path / ckpt.HISTORY).unlink()
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        ckpt.checkpoint_history(tmp_path / "epoch-000003")


def test_pruning_never_removes_the_checkpoint_latest_names(tmp_path):
    _epochs(trained_policy(), tmp_path, 3, keep=None)
    (tmp_path / "latest").write_text("epoch-000002\n")  # the user fell back to epoch 2
    removed = ckpt.prune(tmp_path, 1)
    assert [p.name for p in removed] == ["epoch-000001"]
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-000002", "epoch-000003"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        ckpt.save_checkpoint(tmp_path, 4, trained_policy(), None, None, {}, {}, keep=0)
