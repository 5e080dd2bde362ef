import pytest
import torch

from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.types import Components, ModelInfo


class Stub:
    """A scorer returning values read from the image's mean brightness, so tests can hand-compute."""

    def __init__(self, kind: str):
        self.kind = kind
        self.info = ModelInfo(kind, "v", "0")

    def __call__(self, images, reports=None):
        m = images.mean(dim=(1, 2, 3))  # [B]
        if self.kind == "posture":
            psi = torch.stack([1 + m, torch.ones_like(m), 0 * m, 0 * m, 0 * m], 1)
            return Components(psi=psi, r_align=-m)
        if self.kind == "diag":
            return Components(diag_acc=m, diag_probs=m[:, None].expand(-1, 18))
        return Components(consistency=2 * m - 1)


def const(values):
    return torch.tensor(values)[:, None, None, None].expand(-1, 1, 8, 8).contiguous()


def backend(**kw):
    return InProcessRewards(Stub("posture"), Stub("diag"), Stub("consist"), **kw)


def test_rlcf_total_with_paper_weights_hand_computed():
    policy, anchor = const([0.5, 0.2]), const([0.25, 0.2])
    result = backend().score(policy, ["a", "b"], anchor)
    # image 0: -0.5 + 10*(0.5-0.25) + 10*((0)-(-0.5)) = -0.5 + 2.5 + 5 = 7.0; image 1: -0.2
    assert torch.allclose(result.total, torch.tensor([7.0, -0.2]))
    assert result.anchor.r_align is None and torch.allclose(result.anchor.diag_acc, torch.tensor([0.25, 0.2]))
    assert [m.name for m in result.models] == ["posture", "diag", "consist"]


def test_direct_feedback_drops_the_anchor_terms():
    result = backend(rlcf=False).score(const([0.5]), ["a"], const([0.25]))
    # -0.5 + 10*0.5 + 10*0.0 = 4.5
    assert torch.allclose(result.total, torch.tensor([4.5])) and result.anchor is None


def test_by_default_the_total_is_comparative_only_when_anchor_images_are_sent():
    # the gateway's rule; the engine sends none (it forms RLCF from its anchor store)
    alone = backend().score(const([0.5]), ["a"])
    assert torch.allclose(alone.total, torch.tensor([4.5])) and alone.anchor is None
    assert torch.equal(alone.total, backend(rlcf=False).score(const([0.5]), ["a"]).total)
    align = InProcessRewards(Stub("posture"), None, None, weights={"align": 1.0})
    assert align.score(const([0.5]), ["a"], const([0.25])).anchor is None  # nothing to compare


def test_errors_are_value_errors():
    with pytest.raises(ValueError, match="anchor"):
        backend(rlcf=True).score(const([0.5]), ["a"])
    with pytest.raises(ValueError, match="no scorer"):
        InProcessRewards(None, Stub("diag"), Stub("consist"))
    with pytest.raises(ValueError, match="unknown reward"):
        InProcessRewards(Stub("posture"), None, None, weights={"style": 1.0})
    with pytest.raises(ValueError, match="one report per image"):
        backend().score(const([0.5, 0.5]), ["a"], const([0.5, 0.5]))
    only_align = InProcessRewards(Stub("posture"), None, None, weights={"align": 2.0})
    assert torch.allclose(only_align.score(const([0.5]), ["a"]).total, torch.tensor([-1.0]))
