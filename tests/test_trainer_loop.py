"""trainer.loop: CXRL epochs with in-process rewards and tiny random models, with and without Redis."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from cxrl.infra.ports import free_port
from cxrl.models.generator import Policy, build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.config import load_preset
from trainer.anchor_cache import AnchorCache
from trainer.loop import TrainLoop, bank_seed, format_epoch_line
from trainer.store import RunStore, connect

PROMPTS = [
    "small left pleural effusion.",
    "no acute cardiopulmonary process.",
    "mild cardiomegaly.",
    "right lower lobe pneumonia.",
]


def rl_config(**over):
    base = {
        "epochs": 2,
        "sampling.num_steps": 3,
        "sampling.images_per_epoch": 8,
        "sampling.images_per_prompt": 2,
        "sampling.batch_size": 4,
        "train.batch_size": 4,
        "train.gradient_accumulation_steps": 1,
        "stat_tracker.min_count": 2,
    }
    return load_preset("cpu-small", {**base, **over})


def make_loop(tmp_path, cfg, cache=None, store=None, seed_bank=2, max_in_flight=2, backend=None):
    torch.manual_seed(0)
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    if backend is None:
        p, d, c = random_scorers(0)
        backend = InProcessRewards(p, d, c, weights=cfg.rewards.weights, rlcf=False)
    return TrainLoop(
        cfg, policy, backend, PROMPTS, tmp_path / "run", "run-t", seed_bank=seed_bank, cache=cache,
        store=store, max_in_flight=max_in_flight, progress=False,
    )  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


@pytest.mark.service
def test_two_epochs_with_redis_cache_and_stream(tmp_path, redis_client):
    cfg = rl_config()
    cache = AnchorCache(redis_client, "tiny-v1", prefix="loop")
    store = RunStore(redis_client, prefix="loop")
    store.register("run-t")
    loop = make_loop(tmp_path, cfg, cache=cache, store=store)
    history = loop.run()
    loop.close()

    assert [m["epoch"] for m in history] == [0, 1]
    first, second = history
    assert first["cache_hit_rate"] == 0.0
    assert second["cache_hit_rate"] > 0  # 4 reports x bank of 2 seeds: epoch 2 meets epoch 1's anchors
    for m in history:
        for side in ("policy", "anchor"):
            for name in ("r_align", "diag_acc", "consistency", "total"):
                assert isinstance(m[f"{side}/{name}"], float)
        assert m["approx_kl"] >= 0 and 0 <= m["clipfrac"] <= 1
        assert all(m[f"time/{p}"] >= 0 for p in ("sample", "anchor", "score", "train"))
    assert second["time/anchor"] <= first["time/anchor"] or second["cache_hit_rate"] < 1
    # metrics stream and history file hold every epoch; a checkpoint was written
    assert [m["epoch"] for m in store.metrics("run-t")] == [0, 1]
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    # LoRA/ACE moved
    assert loop.ddpo.global_step == 4


@pytest.mark.service
def test_cached_anchor_components_equal_fresh_ones(tmp_path, redis_client):
    """A cache hit must give the anchor the same components (hence the same RLCF totals) as sampling it."""
    cfg = rl_config(epochs=1)
    cache = AnchorCache(redis_client, "tiny-eq", prefix="eq")
    loop = make_loop(tmp_path / "a", cfg, cache=cache)
    prompts, seeds = loop.plan(0)
    timings = dict.fromkeys(("sample", "anchor"), 0.0)
    fresh = loop.sample_chunk(prompts[:4], seeds[:4], timings)
    res_fresh, _, _ = loop._score(fresh)
    again = loop.sample_chunk(prompts[:4], seeds[:4], timings)
    assert again.missing == [] and again.fresh_anchor is None
    res_cached, _, _ = loop._score(again)
    torch.testing.assert_close(res_cached.anchor.diag_acc, res_fresh.anchor.diag_acc)
    torch.testing.assert_close(res_cached.anchor.consistency, res_fresh.anchor.consistency)
    torch.testing.assert_close(res_cached.total, res_fresh.total)
    loop.close()


def test_uncached_run_without_redis_says_so(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    assert client is None
    assert "unreachable" in caplog.text and "uncached" in caplog.text
    cfg = rl_config(epochs=1)
    loop = make_loop(tmp_path, cfg, cache=None, store=None, max_in_flight=1)
    (m,) = loop.run()
    loop.close()
    assert "cache_hit_rate" not in m
    assert m["anchor/diag_acc"] == m["anchor/diag_acc"]  # anchors sampled and scored every time
    assert "cache off" in format_epoch_line(m, 1)


def test_plan_draws_seeds_from_a_fixed_bank(tmp_path):
    cfg = rl_config()
    loop = make_loop(tmp_path, cfg, seed_bank=3)
    seen: dict[str, set[int]] = {}
    for epoch in range(6):
        prompts, seeds = loop.plan(epoch)
        assert len(prompts) == 8
        for p, s in zip(prompts, seeds, strict=True):
            seen.setdefault(p, set()).add(s)
    for p, s in seen.items():
        assert s <= {bank_seed(cfg.seed, p, k) for k in range(3)}
    assert loop.plan(2) == loop.plan(2)  # deterministic: resumes replay the same plan
    loop.close()


class _Flaky:
    """A backend whose first call fails as a restarting replica would."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def score(self, images, reports, anchor_images=None):
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("replica restarting")
        return self.inner.score(images, reports, anchor_images)

    def info(self):
        return self.inner.info()


def test_a_failed_reward_call_costs_a_retry_not_the_run(tmp_path):
    cfg = rl_config(epochs=1)
    p, d, c = random_scorers(0)
    flaky = _Flaky(InProcessRewards(p, d, c, weights=cfg.rewards.weights, rlcf=False))
    loop = make_loop(tmp_path, cfg, backend=flaky)
    loop.retries, loop.backoff_s = 2, 0.0
    (m,) = loop.run()
    loop.close()
    assert m["reward_retries"] == 1
    assert flaky.calls == 3  # 2 sub-batches + 1 retry


def test_direct_feedback_samples_no_anchor(tmp_path):
    cfg = rl_config(epochs=1, **{"rewards.rlcf": False})
    loop = make_loop(tmp_path, cfg)
    (m,) = loop.run()
    loop.close()
    assert "anchor/diag_acc" not in m and m["time/anchor"] == 0.0
