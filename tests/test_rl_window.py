"""The efficient-recipe options of the engine: training sampler, stochastic window, branching,
CFG-free training, noise-level timestep weighting (tiny random pipeline, in-process rewards)."""

import pytest
import torch

from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.anchor_store import MemoryAnchorStore
from cxrl.rl.config import CXRLConfig
from cxrl.rl.ddim import ddim_std, ddim_step_deterministic, ddim_step_logprob
from cxrl.rl.loss import ppo_loss
from cxrl.rl.policy import make_policy
from cxrl.rl.run import build
from cxrl.rl.sampler import Sampler, sample

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Cardiomegaly without pulmonary edema.",
    "Right lower lobe pneumonia.",
]
WINDOW = {
    "sampling.num_steps": 6,
    "sampling.window": 2,
    "sampling.window_start": 2,
    "sampling.images_per_epoch": 8,
    "sampling.images_per_prompt": 4,
    "sampling.batch_size": 8,
    "sampling.branch": True,
    "stat_tracker.buffer_size": 4,
    "stat_tracker.min_count": 4,
}


def config(**overrides):
    return CXRLConfig.load("cpu-small", {"sampling.num_steps": 4, **overrides})


def engine(cfg, anchors=None):
    policy = make_policy(cfg, build_pipeline(tiny_arch(), seed=1))
    backend = InProcessRewards(*random_scorers(0), weights=cfg.rewards.weights)
    return build(cfg, list(REPORTS), backend, policy=policy, anchors=anchors).engine  # fresh noise


def trainable(policy):
    return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}


def count_unet_rows(policy):
    """The batch of every UNet forward (a guided image counts twice: both CFG branches)."""
    rows = []
    policy.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows


def test_a_window_over_every_step_is_the_papers_ddpo_exactly():
    runs = {}
    for window in (0, 4):  # 0: the paper's default; 4: a window over all 4 steps
        e = engine(config(**{"sampling.window": window}))
        torch.manual_seed(0)
        m = e.run_epoch()
        runs[window] = (trainable(e.policy), m)
    (p0, m0), (p4, m4) = runs[0], runs[4]
    for name in p0:
        assert torch.equal(p0[name], p4[name]), name
    for key in ("policy/total", "loss", "approx_kl", "clipfrac", "grad_norm"):
        assert m4[key] == m0[key], key


def test_steps_outside_the_window_are_deterministic_ddim_and_only_window_steps_are_actions():
    cfg = config(**WINDOW)
    e = engine(cfg)
    policy, s = e.policy, cfg.sampling
    embeds = policy.encode_prompts(REPORTS[:2])
    windowed = Sampler.training(s, 0)
    assert windowed.etas == (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)
    traj = sample(policy, embeds, [5, 6], step_seeds=[7, 8], sampler=windowed)
    ode = sample(policy, embeds, [5, 6], sampler=Sampler.uniform(6, s.guidance_scale, 0.0))
    assert torch.equal(traj.latents[:, :3], ode.latents[:, :3])  # x_T and the two steps before the window
    assert not torch.equal(traj.latents[:, 3], ode.latents[:, 3])  # the window's noise
    sched = policy.pipe.scheduler
    sched.set_timesteps(6)
    for j in (4, 5):  # after the window: deterministic steps of the branch's own latent
        t = traj.timesteps[j]
        eps = policy.predict_noise(
            sched.scale_model_input(traj.latents[:, j], t), t, embeds, s.guidance_scale
        )
        step = ddim_step_deterministic(sched, eps, t, traj.latents[:, j])
        assert torch.equal(step, traj.latents[:, j + 1])
        # the diffusers reference (eta = 0) agrees to float rounding
        ref = torch.stack(
            [
                sched.step(eps[i : i + 1], t, traj.latents[i : i + 1, j], eta=0.0).prev_sample[0]
                for i in range(2)
            ]
        )
        torch.testing.assert_close(step, ref, rtol=1e-5, atol=1e-5)
    assert traj.trainable_steps.tolist() == [2, 3]
    assert (traj.log_probs[:, [0, 1, 4, 5]] == 0).all() and (traj.log_probs[:, 2:4] != 0).all()
    history = e.run(epochs=2)
    grads = {k for k in history[-1] if k.startswith("grad_eps/")}
    assert grads == {"grad_eps/step_02", "grad_eps/step_03"}  # no other step carries a gradient


def test_a_branched_group_shares_its_prefix_computed_once_and_differs_after_the_branch():
    cfg = config(**WINDOW)
    e = engine(cfg)
    plan = e.plan(0)
    assert plan.seeds[:4] == [plan.seeds[0]] * 4 and plan.seeds[4] != plan.seeds[0]
    assert len(set(plan.step_seeds)) == 8
    rows = count_unet_rows(e.policy)
    timings = dict.fromkeys(("sample", "anchor"), 0.0)
    chunk = e.sample_chunk(plan, timings)
    traj = chunk.trajectory
    k, g, t = 2, 4, 6
    cfg_rows = 2  # guidance 3: both branches in one call
    policy_rows = sum(rows[:t])  # the policy's calls come first, then the anchor's
    assert policy_rows == cfg_rows * 2 * (k + g * (t - k))  # two groups: k + G (T - k) images each
    assert sum(rows[t:]) == cfg_rows * 2 * t  # one deterministic anchor per group, not per image
    for group in (range(0, 4), range(4, 8)):
        first = traj.latents[group[0]]
        for i in group:
            assert torch.equal(traj.latents[i, : k + 1], first[: k + 1])  # identical before the branch
        assert not torch.equal(traj.latents[group[1], k + 1], first[k + 1])  # apart after it
    assert torch.equal(chunk.fresh_anchor[0], chunk.fresh_anchor[3])  # the group's one anchor
    assert not torch.equal(chunk.fresh_anchor[0], chunk.fresh_anchor[4])


def test_the_importance_ratio_is_one_before_the_first_update_cfg_free_and_windowed():
    over = {
        **WINDOW,
        "sampling.train_guidance_scale": 1.0,
        "sampling.train_num_steps": 5,
        "sampling.window_start": 1,
        "train.batch_size": 4,
        "train.gradient_accumulation_steps": 2,
    }
    cfg = config(**over)
    e = engine(cfg)
    rows = count_unet_rows(e.policy)
    e.sample_chunk(e.plan(0), dict.fromkeys(("sample", "anchor"), 0.0))
    assert rows[0] == 2  # CFG-free: one UNet row per image; the two groups' shared first step
    e2 = engine(cfg)
    m = e2.run_epoch()  # one optimiser step: every ratio is computed before it
    assert m["clipfrac"] == 0.0 and m["approx_kl"] < 1e-10
    traj = e2.sample_chunk(e2.plan(1), dict.fromkeys(("sample", "anchor"), 0.0)).trajectory
    sched = e2.policy.pipe.scheduler
    sched.set_timesteps(5)
    for j in traj.trainable_steps.tolist():
        ts = traj.timesteps[j].expand(len(traj))
        with torch.no_grad():
            eps = e2.policy.predict_noise(traj.latents[:, j], ts, traj.prompt_embeds, 1.0)
        out = ddim_step_logprob(sched, eps, ts, traj.latents[:, j], prev_sample=traj.latents[:, j + 1])
        torch.testing.assert_close(out.log_prob, traj.log_probs[:, j], rtol=1e-4, atol=1e-4)


def test_the_recipe_composes_with_timestep_batching_kl_and_a_shared_anchor_store():
    runs = {}
    for per_call in (1, 2):
        store = MemoryAnchorStore()
        cfg = config(
            **WINDOW,
            **{
                "train.timesteps_per_call": per_call,
                "train.kl_coef": 1.0,
                "train.timestep_weighting": "noise_level",
                "rewards.rlcf": True,
            },
        )
        e = engine(cfg, store)
        torch.manual_seed(0)
        m = e.run_epoch()
        runs[per_call] = (trainable(e.policy), m, len(store))
    (p1, m1, n1), (p2, m2, n2) = runs[1], runs[2]
    for name in p1:
        torch.testing.assert_close(
            p2[name], p1[name], rtol=0, atol=1e-5
        )  # fp32 summation order under Adam; a wrong gradient moves ~lr = 3e-3
    assert m1["kl"] >= 0 and m2["kl"] == pytest.approx(m1["kl"], rel=1e-4, abs=1e-12)
    assert n1 == n2 == 2  # one stored anchor per branched group
    assert m1["group_size"] == 4.0 and 0.0 <= m1["zero_spread_groups"] <= 1.0


def test_a_sliding_window_moves_one_step_every_k_epochs_and_wraps():
    s = config(**{**WINDOW, "sampling.window_start": 1, "sampling.window_slide_every": 2}).sampling
    starts = [Sampler.training(s, epoch).prefix for epoch in range(10)]
    assert starts == [1, 1, 2, 2, 3, 3, 4, 4, 1, 1]  # positions 1..4 for a 2-step window in 6 steps
    # the anchor does not depend on the window: one store version for the whole run
    assert Sampler.anchor(s) == Sampler.uniform(6, s.guidance_scale, 0.0)


def test_noise_level_weights_scale_each_steps_term():
    cfg = config(**WINDOW)
    sched = make_policy(cfg, build_pipeline(tiny_arch(), seed=1)).pipe.scheduler
    sched.set_timesteps(6)
    sigma = ddim_std(sched, sched.timesteps, 1.0)
    assert (sigma > 0).all() and sigma[0] > sigma[-1]  # noisier early steps
    lp, old, adv = torch.tensor([0.1, 0.2]), torch.tensor([0.1, 0.2]), torch.tensor([1.0, -2.0])
    w = torch.tensor([0.5, 1.5])
    assert ppo_loss(lp, old, adv, weights=w).loss.item() == pytest.approx((-1.0 * 0.5 + 2.0 * 1.5) / 2)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"sampling.window": 5}, "exceeds"),
        ({"sampling.branch": True}, "branch needs"),
        (
            {**WINDOW, "sampling.batch_size": 6, "sampling.images_per_epoch": 12},
            "multiple of images_per_prompt",
        ),
    ],
)
def test_bad_recipes_are_refused_with_what_to_change(over, message):
    with pytest.raises(ValueError, match=message):
        config(**over)
