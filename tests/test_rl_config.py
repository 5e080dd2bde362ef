import pytest

from cxrl.rl.config import PRESET_DIR, CXRLConfig


def test_paper_preset_has_the_papers_numbers():
    cfg = CXRLConfig.load("paper")
    assert cfg.sampling.images_per_epoch == 81
    assert cfg.train.lr == 3e-4
    assert cfg.rewards.weights == {"align": 1.0, "diag": 10.0, "consist": 10.0}
    assert cfg.ace.enabled and cfg.ace.tokens == 3 and cfg.max_report_tokens == 74
    assert cfg.train.clip_range == 1e-4 and cfg.train.adv_clip_max == 5.0
    assert cfg == CXRLConfig()  # the YAML spells out the defaults


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_loads(name):
    cfg = CXRLConfig.load(name)
    assert cfg.optimizer_steps_per_epoch >= 1


def test_ablation_switches():
    assert not CXRLConfig.load("no-ace").ace.enabled
    direct = CXRLConfig.load("direct-feedback")
    assert not direct.rewards.rlcf and not direct.rewards.needs_anchor
    align_only = CXRLConfig.load("paper", {"rewards.weights": {"align": 1.0}})
    assert not align_only.rewards.needs_anchor
    assert CXRLConfig.load("paper", {"rewards.weights": {"diag": 10.0}}).rewards.needs_anchor


def test_small_preset_is_small():
    cfg = CXRLConfig.load("cpu-small")
    assert cfg.sampling.images_per_epoch <= 16 and cfg.train_timesteps < cfg.sampling.num_steps


def test_inconsistent_batches_and_unknown_rewards_are_rejected():
    with pytest.raises(ValueError, match="multiple of sampling.batch_size"):
        CXRLConfig.load("paper", {"sampling.batch_size": 10})
    with pytest.raises(ValueError, match="train.batch_size x"):
        CXRLConfig.load("paper", {"train.batch_size": 2})
    with pytest.raises(ValueError, match="subset of"):
        CXRLConfig.load("paper", {"rewards.weights": {"beauty": 1.0}})
    with pytest.raises(ValueError, match="unknown RL preset"):
        CXRLConfig.load("nonexistent")
    with pytest.raises(ValueError):
        CXRLConfig.load("paper", {"sampling.typo": 1})


def test_paper_batch_is_one_gradient_over_81_images_with_explicit_normalisation():
    """Eq. 2's B = 81: 81 reports sampled per epoch, one optimiser step on all of them."""
    cfg = CXRLConfig.load("paper")
    assert cfg.sampling.images_per_prompt == 1
    assert cfg.train.batch_size * cfg.train.gradient_accumulation_steps == 81
    assert cfg.optimizer_steps_per_epoch == 1
    assert not cfg.stat_tracker.per_prompt  # batch normalisation, not a silent fallback


def test_paper_per_report_preset_normalises_every_report_within_its_epoch():
    import numpy as np

    from cxrl.rl.plan import FreshNoise
    from cxrl.rl.stat_tracker import PerPromptStatTracker

    cfg = CXRLConfig.load("paper-per-report")
    assert cfg.sampling.images_per_epoch == 81 and cfg.optimizer_steps_per_epoch == 1
    plan = FreshNoise([f"report {i}" for i in range(500)], cfg.sampling, seed=0)(0)
    counts = {p: plan.prompts.count(p) for p in plan.prompts}
    assert len(counts) == 9 and set(counts.values()) == {9}
    st = cfg.stat_tracker
    tracker = PerPromptStatTracker(st.buffer_size, st.min_count)
    adv = tracker.update(plan.prompts, np.random.default_rng(0).normal(size=81))
    assert tracker.last_fallback == 0
    for p in counts:  # each report's 9 advantages are standardised on their own
        a = adv[[i for i, q in enumerate(plan.prompts) if q == p]]
        assert abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-3


def test_a_per_report_config_that_can_only_fall_back_is_refused_unless_allowed():
    over = {"stat_tracker.per_prompt": True, "stat_tracker.batch_fallback": False}
    with pytest.raises(ValueError, match="never reaches min_count"):
        CXRLConfig.load("paper", over)
    assert CXRLConfig.load("paper", {**over, "stat_tracker.batch_fallback": True}).stat_tracker.per_prompt
