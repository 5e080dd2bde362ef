"""The engine as the trainer service wires it: Redis anchor cache and metrics stream, history file, retries."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from cxrl import imaging
from cxrl.infra.ports import free_port
from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.config import CXRLConfig
from cxrl.rl.policy import Policy
from cxrl.rl.run import Wiring, build
from cxrl.rl.sinks import HistoryFile, format_epoch_line
from trainer.anchor_cache import AnchorCache
from trainer.runner import RedisMetrics
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
    return CXRLConfig.load("cpu-small", {**base, **over})


def make_loop(
    tmp_path, cfg, cache=None, registry=None, seed_bank=2, max_in_flight=2, backend=None, retries=0
):
    torch.manual_seed(0)
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    if backend is None:
        p, d, c = random_scorers(0)
        backend = InProcessRewards(p, d, c, weights=cfg.rewards.weights)
    sinks = [HistoryFile(tmp_path / "run" / "history.jsonl")]
    if registry is not None:
        sinks.append(RedisMetrics(registry, "run-t"))
    wiring = Wiring(
        plan="seed-bank", seed_bank=seed_bank, max_in_flight=max_in_flight, retries=retries, backoff_s=0
    )
    return build(
        cfg,
        PROMPTS,
        backend,
        policy=policy,
        wiring=wiring,
        run_dir=tmp_path / "run",
        anchors=cache,
        sinks=sinks,
    ).engine


def trainable(engine):
    return {n: p.detach().clone() for n, p in engine.policy.named_parameters() if p.requires_grad}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


@pytest.mark.service
def test_two_epochs_with_redis_cache_and_stream(tmp_path, redis_client):
    cfg = rl_config()
    cache = AnchorCache(redis_client, "tiny-v1", prefix="loop")
    registry = RunStore(redis_client, prefix="loop")
    registry.register("run-t")
    loop = make_loop(tmp_path, cfg, cache=cache, registry=registry)
    before = trainable(loop)
    history = loop.run()
    loop.close()

    assert [m["epoch"] for m in history] == [0, 1]
    first, second = history
    assert first["cache_hit_rate"] == 0.0
    # 4 reports x a bank of 2 seeds, 2 images per report: epoch 2 meets epoch 1's anchors; exactly the
    # pairs epoch 1 stored are hits (the plan says which)
    seen = set(zip(*(lambda e: (e.prompts, e.seeds))(loop.plan(0)), strict=True))
    e1 = loop.plan(1)
    expected = sum((p, s) in seen for p, s in zip(e1.prompts, e1.seeds, strict=True)) / len(e1)
    assert second["cache_hit_rate"] == pytest.approx(expected) and expected > 0
    assert redis_client.exists(cache.key(e1.prompts[0], e1.seeds[0]))  # the anchors are in Redis
    for m in history:
        for side in ("policy", "anchor"):
            for name in ("r_align", "diag_acc", "consistency", "total"):
                assert (
                    m[f"{side}/{name}"] == pytest.approx(m[f"{side}/{name}"])
                    and abs(m[f"{side}/{name}"]) < 50
                )
        assert m["approx_kl"] > 0 and m["loss"] == m["loss"]
    # metrics stream and history file hold every epoch; a checkpoint was written
    assert [m["epoch"] for m in registry.metrics("run-t")] == [0, 1]
    lines = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    # LoRA and ACE moved, the rest did not
    after = trainable(loop)
    assert not torch.equal(before["ace.tokens"], after["ace.tokens"])
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
    assert loop.global_step == 4


@pytest.mark.service
def test_cached_anchor_components_equal_fresh_ones(tmp_path, redis_client):
    """A cache hit must give the anchor the same components (hence the same RLCF totals) as sampling it."""
    cfg = rl_config(epochs=1)
    cache = AnchorCache(redis_client, "tiny-eq", prefix="eq")
    loop = make_loop(tmp_path / "a", cfg, cache=cache)
    part = loop.plan(0).take(range(4))
    timings = dict.fromkeys(("sample", "anchor"), 0.0)
    fresh = loop.sample_chunk(part, timings)
    res_fresh, _, _ = loop._score(fresh)
    again = loop.sample_chunk(part, timings)
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
    loop = make_loop(tmp_path, cfg, cache=None, registry=None, max_in_flight=1)
    (m,) = loop.run()
    loop.close()
    assert "cache_hit_rate" not in m
    assert 0 <= m["anchor/diag_acc"] <= 1 and m["time/anchor"] > 0  # anchors sampled and scored
    assert "cache off" in format_epoch_line(m, 1)


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
    flaky = _Flaky(InProcessRewards(p, d, c, weights=cfg.rewards.weights))
    loop = make_loop(tmp_path, cfg, backend=flaky, retries=2)
    (m,) = loop.run()
    loop.close()
    assert m["reward_retries"] == 1
    assert flaky.calls == 3  # 2 sub-batches + 1 retry
    with pytest.raises(ConnectionError, match="restarting"):  # without retries the same failure stops it
        flaky.calls = 0
        make_loop(tmp_path / "b", cfg, backend=flaky, retries=0).run()


def test_direct_feedback_samples_no_anchor(tmp_path):
    cfg = rl_config(epochs=1, **{"rewards.rlcf": False})
    loop = make_loop(tmp_path, cfg)
    (m,) = loop.run()
    loop.close()
    assert "anchor/diag_acc" not in m and m["time/anchor"] == 0.0


@pytest.mark.service
def test_poisoned_anchor_cache_entries_are_misses_deleted_and_never_reach_a_checkpoint(
    tmp_path, redis_client
):
    from cxrl.rl.checkpoint import load_checkpoint

    cfg = rl_config(epochs=1)
    cache = AnchorCache(redis_client, "tiny-poison", prefix="poison")
    loop = make_loop(tmp_path, cfg, cache=cache)
    e0 = loop.plan(0)
    keys = [cache.key(p, s) for p, s in zip(e0.prompts, e0.seeds, strict=True)]
    # a NaN component, garbage JSON, a non-PNG image, an unknown field
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 20
    good_png = imaging.encode_pngs(torch.rand(1, 1, 8, 8))[0]
    redis_client.hset(
        keys[0], mapping={"png": good_png, "components": '{"diag_acc": NaN, "consistency": 0.1}'}
    )
    redis_client.hset(keys[1], mapping={"png": good_png, "components": "{not json"})
    redis_client.hset(keys[2], mapping={"png": png, "components": '{"diag_acc": 0.5, "consistency": 0.1}'})
    redis_client.hset(keys[3], mapping={"png": good_png, "components": '{"evil": 1}'})
    redis_client.hset(keys[4], mapping={"png": good_png, "components": '{"psi": [1, 2], "diag_acc": 0.5}'})
    redis_client.hset(
        keys[5], mapping={"png": good_png, "components": '{"diag_acc": [0.5], "consistency": 0.1}'}
    )
    (m,) = loop.run()
    loop.close()
    assert m["cache_hit_rate"] == 0.0 and m["dropped_images"] == 0
    for key in keys[:6]:  # each poisoned entry was replaced by a freshly sampled, valid one
        comps = json.loads(redis_client.hget(key, "components"))
        assert set(comps) >= {"diag_acc", "consistency"} and all(
            v == v for v in comps.values() if not isinstance(v, list)
        )
    policy = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3, seed=0)
    load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch-000001", policy)
    assert all(torch.isfinite(p).all() for p in policy.parameters())
