"""Row operations on Components batches (services/components.py)."""

from __future__ import annotations

import json

import torch

from cxrl.rewards.types import Components
from services import components as comp


def _batch(b: int, offset: float = 0.0) -> Components:
    psi = torch.arange(b * 5, dtype=torch.float32).reshape(b, 5) + offset
    return Components(psi=psi, r_align=psi[:, 0] * -0.1, diag_acc=torch.full((b,), 0.5 + offset))


def test_cat_split_round_trip_keeps_row_order():
    a, b = _batch(2), _batch(3, offset=100.0)
    both = comp.cat([a, b])
    assert comp.rows(both) == 5 and both.consistency is None
    back = comp.split(both, [2, 3])
    assert torch.equal(back[0].psi, a.psi) and torch.equal(back[1].diag_acc, b.diag_acc)


def test_cat_keeps_only_fields_every_part_has():
    a = _batch(2)
    b = Components(psi=torch.zeros(1, 5))
    out = comp.cat([a, b])
    assert out.psi.shape == (3, 5) and out.r_align is None and out.diag_acc is None


def test_take_with_positions_and_merge_of_models():
    a = _batch(4)
    picked = comp.take(a, [3, 1])
    assert torch.equal(picked.psi, a.psi[[3, 1]])
    merged = comp.merge([Components(psi=a.psi), Components(consistency=torch.ones(4))])
    assert merged.psi is a.psi and merged.consistency.shape == (4,) and merged.diag_acc is None


def test_row_dicts_survive_json_exactly():
    a = Components(
        psi=torch.randn(3, 5),
        r_align=torch.randn(3),
        diag_probs=torch.rand(3, 18),
        consistency=torch.randn(3),
    )
    rows = [json.loads(json.dumps(comp.row_to_dict(a, i))) for i in range(3)]
    shapes = {n: ((len(v),) if n in comp.VECTOR_FIELDS else ()) for n, v in rows[0].items()}
    back = comp.from_row_dicts(rows, shapes)
    for name in ("psi", "r_align", "diag_probs", "consistency"):
        assert torch.equal(getattr(back, name), getattr(a, name)), name
    assert back.diag_acc is None
