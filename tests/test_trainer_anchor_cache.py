"""trainer.anchor_cache: anchor images and components by (version, report, seed), in a real Redis."""

from __future__ import annotations

import pytest
import torch

from cxrl import imaging
from cxrl.rewards.types import Components
from trainer.anchor_cache import AnchorCache

pytestmark = pytest.mark.service


def _batch(n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 16, 16, generator=g)
    comps = Components(
        psi=torch.rand(n, 5, generator=g),
        r_align=-torch.rand(n, generator=g),
        diag_acc=torch.rand(n, generator=g),
        consistency=torch.rand(n, generator=g) * 2 - 1,
    )
    return images, comps


def test_round_trip_images_and_components(redis_client):
    cache = AnchorCache(redis_client, "gen-v1")
    images, comps = _batch()
    reports, seeds = ["a", "b", "c"], [0, 1, 2]
    assert cache.get_many(reports, seeds) == [None, None, None]
    cache.put_many(reports, seeds, images, comps)
    got = cache.get_many(reports, seeds)
    assert all(e is not None for e in got)
    back = torch.stack([e.image for e in got])
    assert torch.equal(imaging.to_uint8(back), imaging.to_uint8(images))  # 8-bit exact
    stacked = Components.from_rows([e.components for e in got])
    assert torch.equal(stacked.r_align, comps.r_align)  # float32 survives JSON exactly
    assert torch.equal(stacked.psi, comps.psi)
    assert torch.equal(stacked.consistency, comps.consistency)
    assert stacked.diag_probs is None
    assert cache.hits == 3 and cache.misses == 3


def test_key_depends_on_version_report_and_seed(redis_client):
    images, comps = _batch(1)
    v1, v2 = AnchorCache(redis_client, "gen-A"), AnchorCache(redis_client, "gen-B")
    v1.put_many(["r"], [7], images, comps)
    assert v1.get_many(["r"], [7])[0] is not None
    assert v1.get_many(["r"], [8])[0] is None
    assert v1.get_many(["r2"], [7])[0] is None
    assert v2.get_many(["r"], [7])[0] is None
    assert len({v1.key("r", 7), v1.key("r", 8), v1.key("r2", 7), v2.key("r", 7)}) == 4


def test_partial_hits_keep_order(redis_client):
    cache = AnchorCache(redis_client, "gen-order")
    images, comps = _batch(2, seed=1)
    cache.put_many(["x", "z"], [1, 3], images, comps)
    got = cache.get_many(["x", "y", "z"], [1, 2, 3])
    assert got[1] is None
    assert got[0].components["r_align"] == pytest.approx(float(comps.r_align[0]))
    assert got[2].components["r_align"] == pytest.approx(float(comps.r_align[1]))


def test_ttl_is_set(redis_client):
    cache = AnchorCache(redis_client, "gen-ttl", ttl_s=100)
    images, comps = _batch(1)
    cache.put_many(["r"], [0], images, comps)
    assert 0 < redis_client.ttl(cache.key("r", 0)) <= 100


def test_bad_input(redis_client):
    cache = AnchorCache(redis_client, "gen-bad")
    images, comps = _batch(2)
    with pytest.raises(ValueError, match="2 images and 2 component rows; give one of each"):
        cache.put_many(["a"], [0], images, comps)
    with pytest.raises(ValueError, match="one seed per report"):
        cache.get_many(["a", "b"], [0])
    with pytest.raises(ValueError, match="anchor_version"):
        AnchorCache(redis_client, "")


def test_put_many_checks_that_components_match_the_images(redis_client):
    cache = AnchorCache(redis_client, "gen-rows")
    images, comps = _batch(3)
    with pytest.raises(ValueError, match="2 images and 3 component rows"):
        cache.put_many(["a", "b"], [0, 1], images[:2], comps)
    assert cache.get_many(["a", "b"], [0, 1]) == [None, None]  # nothing was written


def test_anchor_version_names_generator_sampling_models_and_labeler(monkeypatch):
    from cxrl.rewards.types import ModelInfo
    from cxrl.rl import versioning

    models = [ModelInfo("posture", "v1", "aa"), ModelInfo("diagnostic", "v1", "bb")]
    base = versioning.anchor_version("gen", {"steps": 20}, models)
    assert base == versioning.anchor_version("gen", {"steps": 20}, list(reversed(models)))  # order-free
    changed = {
        versioning.anchor_version("gen2", {"steps": 20}, models),
        versioning.anchor_version("gen", {"steps": 10}, models),
        versioning.anchor_version("gen", {"steps": 20}, [models[0], ModelInfo("diagnostic", "v1", "cc")]),
    }
    monkeypatch.setattr(versioning, "labeler_version", lambda: "another-labeler")
    changed.add(versioning.anchor_version("gen", {"steps": 20}, models))
    assert base not in changed and len(changed) == 4


def test_non_finite_rows_are_neither_stored_nor_served(redis_client, caplog):
    cache = AnchorCache(redis_client, "gen-nan")
    images, comps = _batch(3)
    comps.consistency[1] = float("nan")
    comps.r_align[2] = float("inf")
    cache.put_many(["a", "b", "c"], [0, 1, 2], images, comps)
    assert redis_client.exists(cache.key("b", 1)) == 0 and redis_client.exists(cache.key("c", 2)) == 0
    assert [e is not None for e in cache.get_many(["a", "b", "c"], [0, 1, 2])] == [True, False, False]
    assert "2 anchor row(s) not stored" in caplog.text
    # a NaN written behind the store's back is a miss, and deleted
    good = redis_client.hget(cache.key("a", 0), "png")
    redis_client.hset(cache.key("d", 3), mapping={"png": good, "components": '{"r_align": NaN}'})
    assert cache.get_many(["d"], [3]) == [None] and redis_client.exists(cache.key("d", 3)) == 0
