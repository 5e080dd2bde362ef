"""The gateway's fan-out and RLCF combination, on in-process scorers behind fake handles (no Ray)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cxrl import imaging
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rewards.types import Components
from services import codec
from services.gateway import Gateway, GatewayArgs

REPORTS = [
    "No acute cardiopulmonary process.",
    "Large right pleural effusion.",
    "Cardiomegaly.",
    "Left pneumothorax.",
]


class _Call:
    """Stands in for a DeploymentHandle method: ``.remote(...)`` returns an awaitable."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def remote(self, *args):
        self.calls.append(args)

        async def _run():
            return self.fn(*args)

        return _run()


class FakeHandle:
    def __init__(self, kind, scorer):
        run = (lambda x, r: scorer(x)) if kind == "posture" else scorer
        self.score = _Call(lambda x, r: (run(x, r), scorer.info))
        self.model_info = _Call(lambda: scorer.info)


@pytest.fixture(scope="module")
def scorers():
    return random_scorers(0)


@pytest.fixture
def gateway(scorers):
    handles = {
        k: FakeHandle(k, s) for k, s in zip(("posture", "diagnostic", "consistency"), scorers, strict=True)
    }
    return Gateway(GatewayArgs(max_batch_images=16), handles.__getitem__), handles


def _inputs(weights, anchors=True, anchor_size=32):
    torch.manual_seed(3)
    x = torch.rand(4, 1, 32, 32)
    a = torch.rand(4, 1, anchor_size, anchor_size) if anchors else None
    return codec.ScoreInputs(x, list(REPORTS), a, weights)


def _same(got: Components | None, want: Components | None):
    assert (got is None) == (want is None)
    if got is None:
        return
    for name in ("psi", "r_align", "diag_acc", "diag_probs", "consistency"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if g is not None:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "weights, anchors",
    [
        ({"align": 1.0, "diag": 10.0, "consist": 10.0}, True),
        ({"align": 1.0, "diag": 10.0, "consist": 10.0}, False),
        ({"diag": 3.0}, True),
        ({"align": 2.0}, True),
    ],
)
def test_gateway_matches_in_process_rewards(gateway, scorers, weights, anchors):
    gw, _ = gateway
    inputs = _inputs(weights, anchors)
    got = asyncio.run(gw.score(inputs))
    used = {"align": 0, "diag": 1, "consist": 2}
    args = [scorers[i] if any(used[w] == i for w in weights) else None for i in range(3)]
    comparative = anchors and bool({"diag", "consist"} & set(weights))
    want = InProcessRewards(*args, weights=weights, rlcf=comparative).score(
        inputs.images, inputs.reports, inputs.anchor_images
    )
    torch.testing.assert_close(got.total, want.total, atol=1e-5, rtol=0)
    _same(got.policy, want.policy)
    _same(got.anchor, want.anchor)
    assert sorted(m.name for m in got.models) == sorted(m.name for m in want.models)


def test_uint8_inputs_as_sent_give_the_same_scores(gateway, scorers):
    gw, handles = gateway
    inputs = _inputs({"align": 1.0, "diag": 10.0, "consist": 10.0})
    as_uint8 = codec.ScoreInputs(
        imaging.to_uint8(inputs.images),
        inputs.reports,
        imaging.to_uint8(inputs.anchor_images),
        inputs.weights,
    )
    for h in handles.values():  # the replicas convert uint8 with codec.as_float
        h.score.fn = (lambda fn: lambda x, r: fn(codec.as_float(x), r))(h.score.fn)
    got = asyncio.run(gw.score(as_uint8))
    want = InProcessRewards(*scorers).score(
        imaging.from_uint8(as_uint8.images), inputs.reports, imaging.from_uint8(as_uint8.anchor_images)
    )
    torch.testing.assert_close(got.total, want.total, atol=1e-5, rtol=0)
    assert handles["diagnostic"].score.calls[0][0].dtype == torch.uint8


def test_anchors_travel_with_policy_images_in_one_call(gateway):
    gw, handles = gateway
    asyncio.run(gw.score(_inputs({"align": 1.0, "diag": 10.0, "consist": 10.0})))
    assert [a[0].shape[0] for a in handles["diagnostic"].score.calls] == [8]
    assert [a[0].shape[0] for a in handles["posture"].score.calls] == [4]  # anchors skip posture


def test_batches_read_by_several_models_are_shared_once(scorers):
    handles = {
        k: FakeHandle(k, s) for k, s in zip(("posture", "diagnostic", "consistency"), scorers, strict=True)
    }
    shared = []
    gw = Gateway(GatewayArgs(), handles.__getitem__, share=lambda x: shared.append(x.shape[0]) or x)
    asyncio.run(gw.score(_inputs({"align": 1.0, "diag": 10.0, "consist": 10.0})))
    assert shared == [8]  # policy + anchors, read by diagnostic and consistency; posture gets its own
    shared.clear()
    asyncio.run(gw.score(_inputs({"align": 1.0, "diag": 10.0, "consist": 10.0}, anchors=False)))
    assert shared == [4]


def test_anchors_of_another_size_are_scored_separately(gateway, scorers):
    gw, handles = gateway
    inputs = _inputs({"consist": 1.0}, anchor_size=48)
    got = asyncio.run(gw.score(inputs))
    want = InProcessRewards(None, None, scorers[2], weights={"consist": 1.0}).score(
        inputs.images, inputs.reports, inputs.anchor_images
    )
    torch.testing.assert_close(got.total, want.total, atol=1e-5, rtol=0)
    assert [a[0].shape[0] for a in handles["consistency"].score.calls] == [4, 4]


def test_too_many_images_and_unknown_model_are_value_errors(scorers):
    handles = {"posture": FakeHandle("posture", scorers[0])}
    gw = Gateway(GatewayArgs(max_batch_images=6, apps={"posture": "posture"}), handles.__getitem__)
    with pytest.raises(ValueError, match="at most 6"):
        asyncio.run(gw.score(_inputs({"align": 1.0})))
    inputs = _inputs({"diag": 1.0}, anchors=False)
    with pytest.raises(ValueError, match="no diagnostic model"):
        asyncio.run(gw.score(inputs))


def test_gateway_args_reject_unknown_weights_and_models():
    with pytest.raises(ValueError, match="unknown reward"):
        Gateway(GatewayArgs(weights={"beauty": 1.0}), lambda k: None)
    with pytest.raises(ValueError, match="unknown models"):
        GatewayArgs(apps={"beauty": "beauty"})
