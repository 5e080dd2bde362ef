"""The model deployment class without Ray: micro-batching across callers and sizes, cache, messages.

``@serve.batch`` keeps one queue per process, bound to the event loop of its first use, so
every call here runs on one module-wide loop.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis
import torch
from ray import serve

from cxrl import imaging
from cxrl.infra.redis_local import LocalRedis
from cxrl.reward.v1 import reward_pb2 as pb
from cxrl.rewards.factory import random_scorers
from services.models import ModelAppArgs, ModelServer, build_scorer

REPORTS = [
    "No acute disease.",
    "Large right pleural effusion.",
    "Cardiomegaly.",
    "Left pneumothorax.",
    "Edema.",
]


LOOP = asyncio.new_event_loop()
run = LOOP.run_until_complete


@pytest.fixture(scope="module", autouse=True)
def close_loop():
    """The module's loop ends with the module: serve.batch's queue tasks cancelled, the default
    executor's threads joined, the loop closed (none of it left for interpreter exit)."""
    yield
    pending = asyncio.all_tasks(LOOP)
    for task in pending:
        task.cancel()
    run(asyncio.gather(*pending, return_exceptions=True))
    run(LOOP.shutdown_default_executor())
    LOOP.close()


@pytest.fixture(autouse=True)
def replica_context(monkeypatch):
    """serve.batch reads max_ongoing_requests from the replica context; stand in for it."""
    ctx = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64))
    monkeypatch.setattr(serve, "get_replica_context", lambda: ctx)


def _model(kind: str, **args):
    return ModelServer(kind, {"source": "random", **args})


def _images(b: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_build_scorer_follows_the_factory_random_models():
    scorer = build_scorer("consistency", ModelAppArgs(source="random", seed=3))
    assert scorer.info == random_scorers(3)[2].info
    with pytest.raises(ValueError):
        build_scorer("posture", ModelAppArgs(source="checkpoint"))  # needs a path


def test_concurrent_callers_of_different_sizes_get_their_own_rows(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    model = _model("diagnostic", max_batch_images=4, batch_wait_timeout_s=0.05)
    ref = random_scorers(0)[1]
    a, b = _images(5, 32, 1), _images(3, 48, 2)

    async def both():
        return await asyncio.gather(model.score(a, REPORTS), model.score(b, REPORTS[:3]))

    (got_a, info), (got_b, _) = run(both())
    assert info == ref.info
    torch.testing.assert_close(got_a.diag_probs, ref(a, REPORTS).diag_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_b.diag_acc, ref(b, REPORTS[:3]).diag_acc, atol=1e-5, rtol=0)


def test_cached_scores_are_reused_and_identical():
    with LocalRedis() as url:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REDIS_URL", url)
            model = _model("posture")
        x = _images(4, 32, 5)
        first, _ = run(model.score(x, [""] * 4))
        hits = redis.Redis.from_url(url).info("stats")["keyspace_hits"]
        second, _ = run(model.score(x, [""] * 4))
        assert redis.Redis.from_url(url).info("stats")["keyspace_hits"] == hits + 4
        torch.testing.assert_close(second.psi, first.psi, atol=0, rtol=0)
        torch.testing.assert_close(second.r_align, first.r_align, atol=0, rtol=0)
        mixed, _ = run(model.score(torch.cat([x[:2], _images(2, 32, 6)]), [""] * 4))  # 2 hits, 2 misses
        torch.testing.assert_close(mixed.psi, random_scorers(0)[0](torch.cat([x[:2], _images(2, 32, 6)])).psi)


def test_predict_message_and_bad_input(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    model = _model("posture", max_request_bytes=4096)
    x = imaging.from_uint8(imaging.to_uint8(_images(2, 32, 7)))
    data, shape, _ = imaging.to_raw(x)
    req = pb.PredictRequest(request_id="p", images=pb.ImageBatch(tensor=pb.Tensor(data=data, shape=shape)))
    out = run(model.predict_message(req))  # posture takes no reports
    assert out.request_id == "p" and len(out.results) == 2 and out.model.name == "posture-resnet18"
    req.images.tensor.data = data * 3  # 6 KiB > 4 KiB limit
    with pytest.raises(ValueError, match="limit"):
        run(model.predict_message(req))
    diag = _model("diagnostic")
    req = pb.PredictRequest(images=pb.ImageBatch(tensor=pb.Tensor(data=data, shape=shape)), reports=["one"])
    with pytest.raises(ValueError, match="2 images but 1 reports"):
        run(diag.predict_message(req))


def test_a_bad_caller_in_a_shared_batch_fails_alone(monkeypatch):
    """Concurrent good and bad callers of one replica: the bad ones get their own error, the good
    ones their scores, identical to scoring them alone (serve.batch would fail every caller)."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    model = _model("consistency", max_batch_images=64, batch_wait_timeout_s=0.2)
    good = [(_images(2, 16, seed), REPORTS[seed : seed + 2]) for seed in range(3)]
    nan = _images(2, 16, 9)
    nan[1, 0, 3, 3] = float("nan")  # passes the per-item checks, fails inside the scorer's pass

    async def all_at_once():
        calls = [model.score(x, r) for x, r in good]
        calls.insert(1, model.score(nan, REPORTS[:2]))
        calls.insert(3, model.score(_images(1, 16, 8), ["   "]))  # refused before batching
        return await asyncio.gather(*calls, return_exceptions=True)

    out = run(all_at_once())
    assert isinstance(out[1], ValueError) and "NaN" in str(out[1])
    assert isinstance(out[3], ValueError) and "non-empty" in str(out[3])
    alone = model.scorer
    for (x, r), (got, _) in zip(good, [out[0], out[2], out[4]], strict=True):
        torch.testing.assert_close(got.consistency, alone(x, r).consistency)
    with pytest.raises(ValueError, match="report 0 is 9000 characters, over the limit of 8192"):
        run(model.score(_images(1, 16, 0), ["x" * 9000]))


def test_a_poisoned_score_cache_entry_is_rescored_not_served():
    with LocalRedis() as url:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REDIS_URL", url)
            model = _model("posture")
        x = _images(2, 32, 7)
        first, _ = run(model.score(x, [""] * 2))  # cached now
        client = redis.Redis.from_url(url)
        keys = sorted(client.keys("cxrl:score:v2:*"))
        client.set(keys[0], b'{"psi": [NaN, 1, 0, 0, 0], "r_align": NaN}')
        client.set(keys[1], b"garbage")
        again, _ = run(model.score(x, [""] * 2))
        torch.testing.assert_close(again.psi, first.psi, atol=0, rtol=0)  # finite, rescored
        assert torch.isfinite(again.r_align).all()
