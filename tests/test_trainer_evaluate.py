"""trainer.evaluate: held-out anchor-vs-policy evaluation, one or several fixed seeds per report."""

from __future__ import annotations

import pytest
import torch

from cxrl.eval.bootstrap import mean_ci
from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.anchor import direct_total
from cxrl.rl.config import load_preset
from cxrl.rl.policy import Policy
from trainer.evaluate import Evaluator, eval_seed

REPORTS = ["small left pleural effusion.", "no acute cardiopulmonary process.", "mild cardiomegaly."]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


def evaluator(k: int) -> Evaluator:
    cfg = load_preset("cpu-small", {"sampling.num_steps": 2, "sampling.batch_size": 4})
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    p, d, c = random_scorers(0)
    backend = InProcessRewards(p, d, c, weights=cfg.rewards.weights, rlcf=False)
    return Evaluator(
        policy, backend, REPORTS, cfg.sampling, cfg.rewards.weights, seed=7, samples_per_report=k
    )


def test_first_seed_of_each_report_is_the_single_sample_seed():
    assert eval_seed(7, "a") == eval_seed(7, "a", 0) != eval_seed(7, "a", 1)
    one, three = evaluator(1), evaluator(3)
    assert three.seeds[: len(REPORTS)] == one.seeds
    assert three.items == REPORTS * 3 and len(set(three.seeds)) == 9


def test_several_samples_per_report_average_before_the_interval():
    one, three = evaluator(1), evaluator(3)
    r1, r3 = one.evaluate(bootstrap=50), three.evaluate(bootstrap=50)
    assert r1["n_prompts"] == r3["n_prompts"] == len(REPORTS)
    assert r3["anchor"]["n_images"] == 9 and r3["samples_per_report"] == 3
    # the first n images of the 3-seed run are the 1-seed run's images
    assert torch.equal(three.anchor().images[: len(REPORTS)], one.anchor().images)
    # the interval resamples reports, each the mean of its 3 paired differences
    w = three.weights
    diff = direct_total(three._scored(anchor=False).components, w) - direct_total(
        three.anchor().components, w
    )
    expected = mean_ci(diff.double().reshape(3, len(REPORTS)).mean(0).numpy(), n_resamples=50, seed=0)
    assert r3["reward_total_diff"] == pytest.approx(expected.to_dict())
    assert r3["reward_total_diff"] != pytest.approx(mean_ci(diff.double().numpy(), n_resamples=50).to_dict())
    with pytest.raises(ValueError, match="samples_per_report"):
        evaluator(0)
