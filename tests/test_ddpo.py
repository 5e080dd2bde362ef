"""The CXRL epoch on a tiny random pipeline with the in-process reward backend."""

import pytest
import torch

from cxrl.models.generator import Policy, build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.checkpoint import load_trained_policy
from cxrl.rl.config import CXRLConfig, load_preset
from cxrl.rl.ddim import ddim_step_logprob
from cxrl.rl.ddpo import DDPOTrainer, make_policy

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Cardiomegaly without pulmonary edema.",
    "Right lower lobe pneumonia.",
    "Pacemaker leads in the right ventricle. Lungs are clear.",
]


def small_config(**overrides) -> CXRLConfig:
    return load_preset("cpu-small", {"sampling.num_steps": 4, **overrides})


def make_trainer(cfg: CXRLConfig, run_dir=None, **kwargs) -> DDPOTrainer:
    rewards = InProcessRewards(*random_scorers(0), weights=cfg.rewards.weights, rlcf=cfg.rewards.rlcf)
    return DDPOTrainer(
        cfg,
        make_policy(cfg, build_pipeline(tiny_arch(), seed=1)),
        rewards,
        REPORTS,
        run_dir=run_dir,
        **kwargs,
    )


def snapshot(policy: Policy) -> dict[str, torch.Tensor]:
    modules = {"unet": policy.unet, "vae": policy.pipe.vae, "text": policy.pipe.text_encoder}
    out = {f"{m}.{n}": p.detach().clone() for m, mod in modules.items() for n, p in mod.named_parameters()}
    if policy.ace is not None:
        out["ace.tokens"] = policy.ace.tokens.detach().clone()
    return out


def test_two_epochs_train_only_lora_and_ace(tmp_path):
    cfg = load_preset("cpu-small", {"epochs": 2})
    trainer = make_trainer(cfg, tmp_path)
    before = snapshot(trainer.policy)
    history = trainer.run()
    after = snapshot(trainer.policy)
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["global_step"] == 2 * cfg.optimizer_steps_per_epoch
    assert {"policy_r_align", "policy_diag_acc", "anchor_consistency"} <= set(history[0])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "ace.tokens" in changed and any("lora_B" in k for k in changed)
    assert all("lora_" in k or k == "ace.tokens" for k in changed), sorted(changed)[:5]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "epoch-000002"

    # the checkpoint restores the trained policy on a fresh base pipeline
    generator = tmp_path / "base"
    build_pipeline(tiny_arch(), seed=1).save_pretrained(generator)
    restored = load_trained_policy(tmp_path / "checkpoints" / "epoch-000002", generator)
    for name, value in snapshot(restored).items():
        assert torch.equal(value, after[name]), name
    assert trainer.timings["sample_anchor"] > 0 and trainer.timings["score"] > 0


def test_recomputed_log_probs_match_sampling_before_any_update():
    cfg = small_config()
    trainer = make_trainer(cfg)
    prompts, seeds = trainer.plan(0)
    traj = trainer.sample_batch(prompts, seeds).trajectory
    policy, sched = trainer.policy, trainer.policy.pipe.scheduler
    with torch.no_grad():
        for j, t in enumerate(traj.timesteps):
            ts = t.expand(len(traj))
            eps = policy.predict_noise(
                traj.latents[:, j], ts, traj.prompt_embeds, cfg.sampling.guidance_scale
            )
            out = ddim_step_logprob(sched, eps, ts, traj.latents[:, j], prev_sample=traj.latents[:, j + 1])
            torch.testing.assert_close(out.log_prob, traj.log_probs[:, j], rtol=1e-4, atol=1e-4)


def test_resumed_run_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    cfg = small_config(epochs=3)
    straight = make_trainer(cfg, tmp_path / "a").run()
    interrupted = make_trainer(cfg, tmp_path / "b")
    interrupted.run(epochs=1)
    resumed = make_trainer(cfg, tmp_path / "b")  # a new process would build everything afresh
    assert resumed.resume() and resumed.epoch == 1
    history = resumed.run()
    keys = ("loss", "approx_kl", "clipfrac", "reward_mean", "grad_norm")
    assert [[h[k] for k in keys] for h in history] == [[h[k] for k in keys] for h in straight]


def test_direct_feedback_samples_no_anchor():
    cfg = small_config(**{"rewards.rlcf": False})
    trainer = make_trainer(cfg)
    batch = trainer.sample(0)[0]
    assert batch.anchor_images is None and trainer.timings["sample_anchor"] < 1e-3
    result = trainer.score(batch)
    assert result.anchor is None and result.total.shape == (len(batch.prompts),)


def test_without_ace_and_with_a_reward_subset():
    cfg = small_config(**{"ace.enabled": False, "rewards.weights": {"align": 1.0}})
    trainer = make_trainer(cfg)
    assert trainer.policy.ace is None and not cfg.rewards.needs_anchor
    metrics = trainer.run_epoch()
    assert "policy_r_align" in metrics and "anchor_diag_acc" not in metrics


def test_anchor_cache_is_used():
    cfg = small_config()
    cache: dict = {}
    trainer = make_trainer(cfg, anchor_cache=cache)
    prompts, seeds = trainer.plan(0)
    first = trainer.sample_batch(prompts, seeds).anchor_images
    assert len(cache) == len(set(zip(prompts, seeds, strict=True)))
    spent = trainer.timings["sample_anchor"]
    cache[(prompts[0], seeds[0])] = torch.zeros_like(first[0])  # a cached value is returned as is
    again = trainer.sample_batch(prompts, seeds).anchor_images
    assert torch.equal(again[1:], first[1:]) and again[0].abs().sum() == 0
    assert trainer.timings["sample_anchor"] - spent < spent  # nothing was re-sampled


def test_plan_is_deterministic_and_images_share_reports():
    trainer = make_trainer(small_config())
    assert trainer.plan(3) == trainer.plan(3) and trainer.plan(3) != trainer.plan(4)
    prompts, seeds = trainer.plan(0)
    assert len(prompts) == 8 and prompts[0] == prompts[1] and len(set(seeds)) == 8


def test_policy_steps_are_fresh_each_epoch_and_anchor_keeps_the_seed_noise():
    trainer = make_trainer(small_config())
    prompts, seeds = trainer.plan(0)
    steps = trainer.step_seeds(0, seeds)
    assert steps == trainer.step_seeds(0, seeds)  # deterministic: resumes replay the same noise
    assert steps != trainer.step_seeds(1, seeds) and len(set(steps)) == len(seeds)
    batch = trainer.sample_batch(prompts[:2], seeds[:2], steps[:2])
    same = trainer.sample_batch(prompts[:2], seeds[:2])
    torch.testing.assert_close(batch.trajectory.latents[:, 0], same.trajectory.latents[:, 0])
    assert not torch.allclose(batch.trajectory.latents[:, -1], same.trajectory.latents[:, -1])
    torch.testing.assert_close(batch.anchor_images, same.anchor_images)  # the anchor is unchanged
    shared = make_trainer(small_config(**{"sampling.shared_step_noise": True}))
    assert shared.step_seeds(0, seeds) is None


def test_bad_setups_are_rejected():
    cfg = small_config(**{"ace.enabled": False, "lora.rank": 0})
    with pytest.raises(ValueError, match="nothing to train"):
        make_trainer(cfg)
    cfg = small_config(max_report_tokens=2)
    with pytest.raises(ValueError, match="no usable reports"):
        make_trainer(cfg)
