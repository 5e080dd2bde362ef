"""r_align and the RLCF combination against hand-computed values."""

import math

import pytest
import torch

from cxrl.rewards.types import PAPER_WEIGHTS, Components, combine, r_align


def test_r_align_hand_computed():
    psi = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0, 0.0],  # identity: perfect posture
            [1.2, 0.9, 0.3, 0.4, math.pi / 2],  # 0.2 + 0.25 + 0.5
            [0.7, 1.1, -0.6, 0.8, -math.pi],  # 0.3 + 0.5 + 1.0
        ]
    )
    expected = torch.tensor([0.0, -0.95, -1.8])
    assert torch.allclose(r_align(psi), expected, atol=1e-6)


def test_r_align_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        r_align(torch.zeros(3, 4))


def test_combine_rlcf_and_direct():
    policy = Components(
        r_align=torch.tensor([-0.2, -0.5]),
        diag_acc=torch.tensor([0.8, 0.5]),
        consistency=torch.tensor([0.30, 0.10]),
    )
    anchor = Components(
        r_align=torch.tensor([-0.4, -0.1]),
        diag_acc=torch.tensor([0.6, 0.75]),
        consistency=torch.tensor([0.25, 0.20]),
    )
    rlcf = combine(policy, anchor, PAPER_WEIGHTS)
    # 1*(-0.2) + 10*(0.8-0.6) + 10*(0.30-0.25) = -0.2 + 2.0 + 0.5
    # 1*(-0.5) + 10*(0.5-0.75) + 10*(0.10-0.20) = -0.5 - 2.5 - 1.0
    assert torch.allclose(rlcf, torch.tensor([2.3, -4.0]), atol=1e-6)
    direct = combine(policy, anchor, PAPER_WEIGHTS, rlcf=False)
    assert torch.allclose(direct, torch.tensor([-0.2 + 8.0 + 3.0, -0.5 + 5.0 + 1.0]), atol=1e-6)
    only_diag = combine(policy, anchor, {"diag": 10.0})
    assert torch.allclose(only_diag, torch.tensor([2.0, -2.5]), atol=1e-6)


def test_combine_errors():
    policy = Components(r_align=torch.zeros(2), diag_acc=torch.zeros(2))
    with pytest.raises(ValueError, match="anchor"):
        combine(policy, None, {"diag": 1.0})
    with pytest.raises(ValueError, match="consistency was not computed"):
        combine(policy, policy, {"consist": 1.0})
    with pytest.raises(ValueError, match="unknown reward"):
        combine(policy, policy, {"aesthetic": 1.0})
    with pytest.raises(ValueError, match="no rewards"):
        combine(policy, policy, {})
    assert torch.equal(combine(policy, None, {"align": 1.0}), torch.zeros(2))


# -- batch operations ---------------------------------------------------------------------------
def _batch(b: int, offset: float = 0.0) -> Components:
    psi = torch.arange(b * 5, dtype=torch.float32).reshape(b, 5) + offset  # [b, 5]
    return Components(psi=psi, r_align=psi[:, 0] * -0.1, diag_acc=torch.full((b,), 0.5 + offset))


def test_concat_then_split_gives_the_parts_back_in_order():
    a, b = _batch(2), _batch(3, offset=100.0)
    both = Components.concat([a, b])
    assert both.num_rows == 5 and both.consistency is None
    assert both.psi[2, 0] == 100.0  # b's first row follows a's last
    back = both.split([2, 3])
    for got, want in zip(back, (a, b), strict=True):
        assert set(got.present()) == {"psi", "r_align", "diag_acc"}
        for name, value in want.present().items():
            assert torch.equal(getattr(got, name), value), name
    with pytest.raises(ValueError, match=r"add up to 4, not 5"):
        both.split([2, 2])


def test_concat_keeps_only_fields_every_part_has_and_of_nothing_is_empty():
    out = Components.concat([_batch(2), Components(psi=torch.zeros(1, 5))])
    assert out.psi.shape == (3, 5) and out.r_align is None and out.diag_acc is None
    assert Components.concat([]).present() == {} and Components.concat([]).num_rows == 0


def test_take_positions_in_any_order_and_merge_of_models():
    a = _batch(4)
    picked = a.take([3, 1, 3])
    assert torch.equal(picked.psi, a.psi[[3, 1, 3]]) and torch.equal(picked.diag_acc, a.diag_acc[[3, 1, 3]])
    assert torch.equal(a.take(torch.tensor([0])).r_align, a.r_align[:1])
    merged = Components.merge([Components(psi=a.psi), Components(consistency=torch.ones(4))])
    assert merged.psi is a.psi and merged.consistency.shape == (4,) and merged.diag_acc is None


def test_num_rows_refuses_fields_of_different_lengths():
    with pytest.raises(ValueError, match="disagree"):
        _ = Components(r_align=torch.zeros(2), diag_acc=torch.zeros(3)).num_rows


def test_rows_are_json_with_a_number_per_scalar_and_a_list_per_vector_and_round_trip_exactly():
    import json

    g = torch.Generator().manual_seed(0)
    a = Components(
        psi=torch.randn(3, 5, generator=g),
        r_align=torch.randn(3, generator=g),
        diag_probs=torch.rand(3, 18, generator=g),
        consistency=torch.randn(3, generator=g),
    )
    rows = json.loads(json.dumps(a.to_rows()))
    assert len(rows) == 3 and set(rows[0]) == {"psi", "r_align", "diag_probs", "consistency"}
    assert isinstance(rows[1]["r_align"], float) and len(rows[1]["psi"]) == 5
    assert rows[2]["consistency"] == a.consistency[2].item()
    back = Components.from_rows(rows)
    for name, value in a.present().items():
        assert getattr(back, name).dtype == torch.float32 and torch.equal(getattr(back, name), value), name
    assert back.diag_acc is None


def test_from_rows_sets_a_field_only_when_every_row_has_it_and_refuses_bad_rows():
    out = Components.from_rows([{"r_align": -0.5, "diag_acc": 1.0}, {"r_align": 0.25}])
    assert torch.equal(out.r_align, torch.tensor([-0.5, 0.25])) and out.diag_acc is None
    assert Components.from_rows([]).present() == {}
    with pytest.raises(ValueError, match="'r_align' must be a number per row"):
        Components.from_rows([{"r_align": [-0.5]}])  # a one-element list is not a scalar
    with pytest.raises(ValueError, match="'psi' must be a list of numbers"):
        Components.from_rows([{"psi": 1.0}])
    with pytest.raises(ValueError, match="unknown component names"):
        Components.from_rows([{"r_algn": 1.0}])
