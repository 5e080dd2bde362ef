import csv
import math

import pytest
import torch

from cxrl.labels import LABELS
from cxrl.world.dataset import ImageDataset, load_records


def test_load_records_and_splits(tiny_world):
    records = load_records(tiny_world)
    assert len(records) == 64
    train = load_records(tiny_world, "train")
    test = load_records(tiny_world, "test")
    assert len(train) == 48 and len(test) == 16
    r = train[0]
    assert r.view == "PA" and r.image_path.is_file() and r.posture is not None and len(r.posture) == 5
    assert all(lab in LABELS and v in (-1, 0, 1) for lab, v in r.labels.items())


def test_image_dataset_items(tiny_world):
    ds = ImageDataset(load_records(tiny_world, "train"), size=32)
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert item["labels"].shape == (20,)
    rec = ds.records[0]
    for i, lab in enumerate(LABELS):
        v = item["labels"][i]
        assert math.isnan(v) if lab not in rec.labels else float(v) == rec.labels[lab]
    assert torch.allclose(item["posture"], torch.tensor(rec.posture, dtype=torch.float32))
    native = ImageDataset(ds.records)[0]["image"]
    assert native.shape == (1, 64, 64)


def test_missing_directory_and_bad_split(tmp_path, tiny_world):
    with pytest.raises(FileNotFoundError, match="cxrl world build"):
        load_records(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_records(tiny_world, "val")


def _write(path, rows, fields):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_bad_metadata_names_the_line(tmp_path):
    fields = ["id", "split", "image", "report", "view", "effusion", "sx", "sy", "tx", "ty", "theta"]
    row = {
        "id": "a",
        "split": "train",
        "image": "a.png",
        "report": "r",
        "view": "PA",
        "effusion": "2",
        "sx": "",
        "sy": "",
        "tx": "",
        "ty": "",
        "theta": "",
    }
    _write(tmp_path / "metadata.csv", [row], fields)
    with pytest.raises(ValueError, match=r"metadata.csv:2: .*Effusion"):
        load_records(tmp_path)
    row.update(effusion="1", sx="1.0")
    _write(tmp_path / "metadata.csv", [row], fields)
    with pytest.raises(ValueError, match="partly filled"):
        load_records(tmp_path)
    _write(tmp_path / "metadata.csv", [{"id": "a"}], ["id"])
    with pytest.raises(ValueError, match="missing columns"):
        load_records(tmp_path)


def test_missing_image_is_named(tmp_path):
    fields = ["id", "split", "image", "report", "view"]
    _write(
        tmp_path / "metadata.csv",
        [{"id": "a", "split": "test", "image": "gone.png", "report": "r", "view": "PA"}],
        fields,
    )
    ds = ImageDataset(load_records(tmp_path))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        ds[0]
