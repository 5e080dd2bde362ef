"""MIMIC-CXR-JPG loader on a small tree written here in the published layout (synthetic reports)."""

import gzip
import io

import numpy as np
import pytest
from PIL import Image

from cxrl.world.dataset import ImageDataset, load_records
from cxrl.world.mimic import MimicSelection, select_records, write_selection

SHORT = "FINAL REPORT\n EXAMINATION: CHEST\n\n FINDINGS: Heart size is normal.\n\n IMPRESSION: \n {}\n"
CHEX_COLS = [
    "subject_id",
    "study_id",
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]


def _jpg(path, seed):
    arr = (np.random.default_rng(seed).random((40, 48)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())


def _csv(path, header, rows, gz):
    text = ",".join(header) + "\n" + "".join(",".join(str(c) for c in r) + "\n" for r in rows)
    if gz:
        with gzip.open(str(path) + ".gz", "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


def make_tree(root, gz=True):
    """12 subjects, one study each: views and splits vary; study 7 has a too-long impression."""
    meta, split, chex = [], [], []
    for i in range(12):
        subject, study = 10000000 + i, 50000000 + i
        sdir = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        sdir.mkdir(parents=True)
        name = "test" if i >= 8 else "train"
        text = "word " * 80 if i == 7 else ("Small left pleural effusion." if i % 2 else "No acute process.")
        (sdir.parent / f"s{study}.txt").write_text(SHORT.format(text))
        views = ["PA", "LATERAL"] if i % 3 else ["AP", "PA"]
        for k, view in enumerate(views):
            dicom = f"d{i:02d}{k}abc"
            _jpg(sdir / f"{dicom}.jpg", i * 10 + k)
            meta.append([dicom, subject, study, "CHEST", view])
            split.append([dicom, study, subject, name])
        if i != 3:  # study 3 has no CheXpert row: labelled by our labeler
            row = [subject, study] + [""] * (len(CHEX_COLS) - 2)
            row[CHEX_COLS.index("Pleural Effusion")] = "1.0" if i % 2 else "0.0"
            row[CHEX_COLS.index("No Finding")] = "" if i % 2 else "1.0"
            chex.append(row)
    _csv(
        root / "mimic-cxr-2.0.0-metadata.csv",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition"],
        meta,
        gz,
    )
    _csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split, gz)
    _csv(root / "mimic-cxr-2.0.0-chexpert.csv", CHEX_COLS, chex, gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_selection_follows_the_paper(tmp_path, gz):
    root = make_tree(tmp_path, gz)
    recs = select_records(root, MimicSelection(n_train=6, n_test=3, seed=0))
    train = [r for r in recs if r.split == "train"]
    test = [r for r in recs if r.split == "test"]
    assert len(train) == 6 and len(test) == 3
    assert all(r.view in ("PA", "AP") for r in train)
    assert all(r.view == "PA" for r in test)
    assert len({r.image_path.parent for r in recs}) == 9  # one image per study
    assert all(r.posture is None and r.image_path.is_file() for r in recs)
    assert all("word" not in r.report for r in recs)  # the 80-token impression is excluded
    for r in recs:
        if "effusion" in r.report:
            assert r.labels["Effusion"] == 1
        else:
            assert r.labels.get("No Finding") == 1


def test_same_seed_same_selection_other_seed_differs(tmp_path):
    root = make_tree(tmp_path)
    a = [r.id for r in select_records(root, MimicSelection(n_train=4, n_test=2, seed=0))]
    b = [r.id for r in select_records(root, MimicSelection(n_train=4, n_test=2, seed=0))]
    c = [[r.id for r in select_records(root, MimicSelection(n_train=4, n_test=2, seed=s))] for s in (1, 2, 3)]
    assert a == b
    assert any(x != a for x in c)


def test_write_selection_reads_back_through_the_one_interface(tmp_path):
    root = make_tree(tmp_path / "mimic")
    write_selection(root, tmp_path / "sel", MimicSelection(n_train=6, n_test=3))
    recs = load_records(tmp_path / "sel")
    assert len(recs) == 9 and all(r.posture is None for r in recs)
    item = ImageDataset(recs, size=32)[0]
    assert item["image"].shape == (1, 32, 32)
    assert bool(item["posture"].isnan().all())
    # the root itself is also accepted (default selection needs more pairs than this tree has)
    with pytest.raises(ValueError, match="only .* train pairs"):
        load_records(root)


def test_too_few_pairs_is_an_error(tmp_path):
    root = make_tree(tmp_path)
    with pytest.raises(ValueError, match="only 4 test pairs"):
        select_records(root, MimicSelection(n_train=2, n_test=5))


def test_missing_and_corrupt_files_are_named(tmp_path):
    root = make_tree(tmp_path)
    report = next((root / "files").rglob("s50000001.txt"))
    report.unlink()
    with pytest.raises(FileNotFoundError, match="s50000001.txt"):
        select_records(root, MimicSelection(n_train=7, n_test=1))
    root2 = make_tree(tmp_path / "b")
    for jpg in (root2 / "files").rglob("*.jpg"):
        jpg.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"\.jpg is not a readable JPEG"):
        select_records(root2, MimicSelection(n_train=1, n_test=1))
    (root2 / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-split.csv"):
        select_records(root2, MimicSelection(n_train=1, n_test=1))
    (root2 / "mimic-cxr-2.0.0-chexpert.csv.gz").write_bytes(b"\x1f\x8bgarbage")
    (root2 / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id\n")
    with pytest.raises(ValueError, match="split.csv: missing columns"):
        select_records(root2, MimicSelection(n_train=1, n_test=1))
