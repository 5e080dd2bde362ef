"""The anchor stores (memory, directory; Redis in test_trainer_anchor_cache) and the one row check."""

import json
import logging

import numpy as np
import pytest
import torch

from cxrl.rewards.types import Components, row_signature, valid_row
from cxrl.rl.anchor_store import DirAnchorStore, MemoryAnchorStore

ROW = {"psi": [1.0, 1.0, 0.0, 0.0, 0.0], "r_align": -0.25, "diag_acc": 0.5, "consistency": 0.125}


def _batch(n: int = 3):
    g = torch.Generator().manual_seed(0)
    comps = Components(
        r_align=-torch.rand(n, generator=g),
        diag_acc=torch.rand(n, generator=g),
        consistency=torch.rand(n, generator=g),
    )
    return torch.rand(n, 1, 8, 8, generator=g), comps


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        "{}",
        '{"r_align": NaN}',
        '{"diag_acc": Infinity}',
        '{"r_align": true}',
        '{"r_align": "x"}',
        '{"r_align": [1.0]}',
        '{"psi": [1, 2, 3, 4]}',
        '{"psi": [1, 2, 3, 4, NaN]}',
        '{"unknown": 1.0}',
        {"consistency": float("-inf")},
    ],
)
def test_valid_row_refuses_what_no_store_may_hold(bad):
    assert valid_row(bad) is None


def test_valid_row_accepts_rows_as_written_and_checks_a_signature():
    assert valid_row(json.dumps(ROW)) == ROW == valid_row(ROW)
    probs = [0.5] * 17 + [float("nan")]  # a label the classifier does not score is NaN (rewards.diagnostic)
    assert valid_row({"diag_acc": 1.0, "diag_probs": probs}) is not None
    like = row_signature(ROW)
    assert like == {"psi": 5, "r_align": 0, "diag_acc": 0, "consistency": 0}
    assert valid_row(ROW, like) == ROW
    assert valid_row({"r_align": -0.25}, like) is None  # fields missing
    assert valid_row({**ROW, "diag_probs": [0.5] * 18}, like) is None  # a field too many


@pytest.mark.parametrize("kind", ["memory", "directory"])
def test_non_finite_rows_are_neither_stored_nor_served(tmp_path, kind, caplog):
    store = MemoryAnchorStore() if kind == "memory" else DirAnchorStore(tmp_path, "v1")
    images, comps = _batch()
    comps.consistency[1] = float("nan")
    comps.diag_acc[2] = float("inf")
    with caplog.at_level(logging.WARNING, logger="cxrl.rl.anchor_store"):
        store.put_many(["a", "b", "c"], [0, 1, 2], images, comps)
    assert "2 anchor row(s) not stored" in caplog.text
    got = store.get_many(["a", "b", "c"], [0, 1, 2])
    assert [e is not None for e in got] == [True, False, False]
    assert torch.equal(got[0].image, images[0]) and got[0].components == comps.to_rows()[0]
    assert (store.hits, store.misses) == (1, 2)


def test_a_directory_entry_with_a_non_finite_row_is_a_miss(tmp_path, caplog):
    store = DirAnchorStore(tmp_path, "v1")
    images, comps = _batch(1)
    store.put_many(["a"], [0], images, comps)
    path = store.path("a", 0)
    row = np.frombuffer(b'{"r_align": NaN, "diag_acc": 0.5, "consistency": 0.1}', dtype=np.uint8)
    np.savez(path, image=images[0].numpy(), row=row)  # written behind the store's back
    assert store.get_many(["a"], [0]) == [None]
    assert "not finite or malformed" in caplog.text


def test_puts_need_one_report_seed_image_and_row_each(tmp_path):
    images, comps = _batch(2)
    for store in (MemoryAnchorStore(), DirAnchorStore(tmp_path, "v1")):
        with pytest.raises(ValueError, match="1 reports, 1 seeds, 2 images and 2 component rows"):
            store.put_many(["a"], [0], images, comps)
        with pytest.raises(ValueError, match="one seed per report"):
            store.get_many(["a", "b"], [0])
