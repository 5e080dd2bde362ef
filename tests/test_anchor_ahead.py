"""cxrl.rl.anchor_ahead.AnchorAhead: the frozen anchor sampled ahead on a thread gives the same run, with cache hits."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_trainer_engine import PROMPTS, make_loop, rl_config

from cxrl.eval.evaluate import Evaluator
from cxrl.eval.heldout import HeldOutConfig, Prompt
from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.anchor_ahead import AnchorAhead
from cxrl.rl.frozen_anchor import FrozenAnchor
from cxrl.rl.policy import Policy
from cxrl.rl.rlcf import RewardSpec
from cxrl.rl.sampler import sample
from trainer.anchor_cache import AnchorCache

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)

COMPARED = (
    "policy/total",
    "policy/r_align",
    "policy/consistency",
    "anchor/total",
    "anchor/r_align",
    "anchor/consistency",
    "approx_kl",
)


def test_frozen_anchor_samples_the_base_model_even_while_the_policy_has_trained():
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    cfg = rl_config(**{"sampling.num_steps": 2})
    seeds = [11, 12, 13]
    with policy.anchor():
        expected = sample(
            policy,
            policy.encode_prompts(PROMPTS[:3]),
            seeds,
            2,
            cfg.sampling.guidance_scale,
            cfg.sampling.eta,
        ).images
    frozen = FrozenAnchor(policy)
    with torch.no_grad():  # training moves LoRA and ACE; the anchor must not see it
        for p in policy.trainable_parameters():
            p.add_(0.5)
    assert torch.equal(frozen.sample(PROMPTS[:3], seeds, cfg.sampling), expected)
    assert not frozen.policy.is_anchor  # the copy enters anchor mode only while sampling
    assert frozen.policy.unet is not policy.unet  # its own copy: the loop's module is never switched


def _run(
    tmp_path, redis_client, prefix: str, ahead_mode: str | None
) -> tuple[list[dict], AnchorAhead | None]:
    cfg = rl_config(epochs=3)
    cache = AnchorCache(redis_client, "tiny-ahead", prefix=prefix)
    loop = make_loop(tmp_path / prefix, cfg, cache=cache, seed_bank=4)
    ahead = None
    if ahead_mode is not None:
        ahead = AnchorAhead(
            loop.plan, FrozenAnchor(loop.policy), loop.backend, cache, cfg.sampling, loop.spec
        )
    if ahead_mode == "sync":  # every later epoch's anchors cached before the loop starts
        assert [ahead.prefetch(e) for e in (1, 2)] == [8, ahead.sampled - 8]
    elif ahead_mode == "thread":
        loop.ahead = ahead  # the engine starts it with the run and stops it on close
    history = loop.run()
    loop.close()
    return history, ahead


@pytest.mark.service
def test_anchors_sampled_ahead_leave_the_run_unchanged_and_hit_the_cache(tmp_path, redis_client):
    plain, _ = _run(tmp_path, redis_client, "plain", None)
    synced, ahead = _run(tmp_path, redis_client, "sync", "sync")
    threaded, ahead_t = _run(tmp_path, redis_client, "thread", "thread")
    assert ahead.sampled > 0 and ahead.error is None and ahead_t.error is None
    for other in (synced, threaded):
        for a, b in zip(plain, other, strict=True):
            for key in COMPARED:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
            # the loss at ratio 1 is -mean(advantage), a sum that nearly cancels: its scale is the advantages'
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    # with everything prefetched, epochs 2 and 3 find every anchor in the cache
    assert [m["cache_hit_rate"] for m in synced][1:] == [1.0, 1.0]
    assert plain[0]["cache_hit_rate"] == 0.0  # (synced epoch 1 may meet pairs of later epochs)


def test_evaluation_anchor_from_the_thread_equals_the_one_computed_in_line():
    cfg = rl_config(**{"sampling.num_steps": 2})
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    p, d, c = random_scorers(0)
    backend = InProcessRewards(p, d, c, weights=cfg.rewards.weights)
    held = HeldOutConfig(prompts=len(PROMPTS), seed=7)
    prompts = [Prompt(str(i), r) for i, r in enumerate(PROMPTS)]
    inline = Evaluator(held, prompts, cfg.sampling, backend, cfg.rewards.weights, policy)
    frozen = FrozenAnchor(policy)
    ahead_eval = Evaluator(
        held, prompts, cfg.sampling, backend, cfg.rewards.weights, policy, frozen_anchor=frozen
    )
    spec = RewardSpec(cfg.rewards.weights, True, True)
    ahead = AnchorAhead(None, frozen, backend, None, cfg.sampling, spec, after=ahead_eval.anchor).start(1, 3)
    ahead.join(timeout=120)
    assert ahead.error is None and ahead_eval._anchor is not None  # computed on the thread
    threaded, in_line = ahead_eval.anchor(), inline.anchor()
    assert (
        threaded.values.keys()
        == in_line.values.keys()
        == {"reward_total", "r_align", "diag_acc", "clip_similarity"}
    )
    for name, values in in_line.values.items():
        assert np.array_equal(threaded.values[name], values), name  # same images, same scores
    assert np.array_equal(threaded.probs, in_line.probs)


def test_a_failing_thread_is_logged_and_the_loop_samples_its_own_anchors(tmp_path, redis_client, caplog):
    cfg = rl_config()
    loop = make_loop(tmp_path, cfg, cache=AnchorCache(redis_client, "tiny-fail", prefix="fail"))

    class Broken(FrozenAnchor):
        def sample(self, reports, seeds, sampling, sampler=None):
            raise RuntimeError("out of memory")

    ahead = AnchorAhead(loop.plan, Broken(loop.policy), loop.backend, loop.anchors, cfg.sampling, loop.spec)
    with caplog.at_level(logging.WARNING, logger="cxrl.rl.anchor_ahead"):
        ahead.start(1, cfg.epochs).join(timeout=60)
    assert isinstance(ahead.error, RuntimeError) and "out of memory" in caplog.text
    history = loop.run()
    loop.close()
    assert len(history) == 2 and all(-50 < m["anchor/total"] < 50 for m in history)  # sampled in line
    assert history[0]["time/anchor"] > 0
