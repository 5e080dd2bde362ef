import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cxrl.imaging import load_image
from cxrl.labels import LABELS, column_name
from cxrl.reports.labeler import label_report
from cxrl.reports.sections import MAX_TOKENS, count_tokens
from cxrl.world.build import METADATA_COLUMNS, WorldConfig, build_world, make_jobs, plan_draws
from cxrl.world.render import Renderer


def _rows(world: Path) -> list[dict[str, str]]:
    with open(world / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_and_metadata(tiny_world):
    rows = _rows(tiny_world)
    assert len(rows) == 64
    assert sum(r["split"] == "train" for r in rows) == 48
    assert sum(r["split"] == "test" for r in rows) == 16
    assert list(rows[0]) == list(METADATA_COLUMNS)
    for label in LABELS:
        assert column_name(label) in rows[0]
    for r in rows:
        img = load_image(tiny_world / r["image"])
        assert img.shape == (1, 64, 64)
        assert 0 < count_tokens(r["report"]) <= MAX_TOKENS
        assert "XXXX" not in r["report"]
        sx, sy, tx, ty, th = (float(r[k]) for k in ("sx", "sy", "tx", "ty", "theta"))
        assert 0.85 <= sx <= 1.15 and 0.85 <= sy <= 1.15 and abs(tx) <= 0.1 and abs(ty) <= 0.1
        assert abs(th) <= np.radians(10) + 1e-6
        assert r["mask"]


def test_labels_come_from_the_report_labeler(tiny_world):
    for r in _rows(tiny_world):
        expected = label_report(r["report"])
        got = {lab: int(r[column_name(lab)]) for lab in LABELS if r[column_name(lab)] != ""}
        assert got == expected
        # every positive finding is drawn; uncertain ones at half strength or not at all
        drawn = {x.split(":")[0]: float(x.split(":")[2]) for x in r["rendered"].split("|") if x}
        for lab, v in expected.items():
            if lab == "No Finding":
                continue
            if v == 1:
                assert drawn.get(lab) == 1.0
            elif v == -1:
                assert drawn.get(lab, 0.5) == 0.5
            else:
                assert lab not in drawn


def test_no_report_crosses_splits(tiny_world):
    rows = _rows(tiny_world)
    train = {r["report_id"] for r in rows if r["split"] == "train"}
    test = {r["report_id"] for r in rows if r["split"] == "test"}
    assert train and test and not train & test


def test_oversampling_shows_findings_and_is_recorded(tiny_world):
    rows = _rows(tiny_world)
    abnormal = sum(bool(r["rendered"]) for r in rows)
    assert abnormal >= 0.35 * len(rows)  # at least the oversampled share shows something
    sampling = json.loads((tiny_world / "sampling.json").read_text())
    assert sampling["splits"]["train"]["images"] == 48
    assert sampling["splits"]["train"]["oversampled_draws"] == 48 - sampling["splits"]["train"]["base_draws"]
    assert set(sampling["label_counts"]["train"]) == set(LABELS)


def test_canonical_is_mean_of_unposed_training_renders(tiny_world):
    cfg = WorldConfig(n_train=48, n_test=16, size=64, seed=0)
    jobs, _ = make_jobs(cfg)
    renderer = Renderer(cfg.size)
    unposed, posed = [], []
    for job in jobs[:48]:  # fewer than 500 training images: every one is averaged
        assert job.split == "train"
        rng, mask_index, psi, draws = plan_draws(job, cfg.seed, renderer.n_masks)
        out = renderer.render(mask_index, draws, psi, rng)
        unposed.append(out.canonical)
        posed.append(out.image)
    canonical = load_image(tiny_world / "canonical.png").numpy()[0]
    assert np.abs(canonical - np.mean(unposed, axis=0)).max() <= 1 / 255 + 1e-6  # 8-bit quantisation
    # and not the mean of the posed pictures, whose frame differs from the one psi refers to
    assert np.abs(canonical - np.mean(posed, axis=0)).mean() > 5 / 255


def _digest(world: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(world.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(world).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tiny_world, tmp_path):
    again = tmp_path / "again"
    build_world(again, WorldConfig(n_train=48, n_test=16, size=64, seed=0, workers=2), progress=False)
    assert _digest(again) == _digest(tiny_world)


@pytest.mark.slow  # two world builds
def test_other_seed_other_world(tmp_path):
    a = tmp_path / "a"
    build_world(a, WorldConfig(n_train=6, n_test=2, size=32, seed=1, workers=1), progress=False)
    b = tmp_path / "b"
    build_world(b, WorldConfig(n_train=6, n_test=2, size=32, seed=2, workers=1), progress=False)
    assert _digest(a) != _digest(b)


def test_refuses_to_overwrite(tiny_world):
    with pytest.raises(ValueError, match="already exists"):
        build_world(tiny_world, WorldConfig(n_train=4, n_test=2, size=32), progress=False)


def test_bad_sizes_are_errors(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        build_world(tmp_path / "w", WorldConfig(n_train=4, n_test=2, size=16), progress=False)
    with pytest.raises(ValueError, match="positive number"):
        build_world(tmp_path / "w2", WorldConfig(n_train=0, n_test=0, size=32), progress=False)
