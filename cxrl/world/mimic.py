"""MIMIC-CXR-JPG (v2.0.0) in its published layout, selected the way the CXRL paper does.

Layout read (``root`` is the dataset directory)::

    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, one column per CheXpert label (1/0/-1/blank)
    files/pXX/pNNNNNNNN/sNNNNNNNN.txt                 free-text report of a study
    files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg      its images (XX = first two digits of the subject)

Selection (paper, Sec. 3): training pairs from the official ``train`` split with PA or AP
views, test pairs from the official ``test`` split with PA views (``validate`` is not used);
the report text is the impression section (``cxrl.reports.sections.impression``) and must
have at most 74 tokens; one image per study (drawn by the seed among its eligible views),
studies visited in a seeded random order until ``n_train`` / ``n_test`` pairs are found.

Labels come from the CheXpert csv mapped to our vocabulary (``CHEXPERT_TO_LABEL``;
"Pleural Other" has no counterpart and is dropped); studies absent from it are labelled
by our report labeler on the impression. Posture is unknown for real radiographs (None).
A missing or unreadable file raises an error naming that file.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrl.labels import LABELS, column_name
from cxrl.reports.sections import MAX_TOKENS, count_tokens, impression
from cxrl.world.posture import PSI_NAMES
from cxrl.world.records import Record

PREFIX = "mimic-cxr-2.0.0-"
TABLES = {
    "metadata": ("dicom_id", "subject_id", "study_id", "ViewPosition"),
    "split": ("dicom_id", "study_id", "subject_id", "split"),
    "chexpert": ("subject_id", "study_id"),
}
CHEXPERT_TO_LABEL = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Enlarged Cardiomediastinum": "Enlarged Cardiomediastinum",
    "Fracture": "Fracture",
    "Lung Lesion": "Lung Lesion",
    "Lung Opacity": "Lung Opacity",
    "No Finding": "No Finding",
    "Pleural Effusion": "Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Support Devices": "Support Devices",
}
VIEWS = {"train": ("PA", "AP"), "test": ("PA",)}


@dataclass(frozen=True)
class MimicSelection:
    """How many pairs to select, and the seed."""

    n_train: int = 5000  # training pairs (PA or AP)
    n_test: int = 1000  # test pairs (PA)
    seed: int = 0  # selection seed
    max_tokens: int = MAX_TOKENS  # longest impression kept


def table_path(root: Path, name: str) -> Path:
    for suffix in (".csv", ".csv.gz"):
        p = root / f"{PREFIX}{name}{suffix}"
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"{root / (PREFIX + name + '.csv')}(.gz) not found; is {root} a MIMIC-CXR-JPG root?"
    )


def is_mimic_root(root: Path) -> bool:
    return any((Path(root) / f"{PREFIX}metadata{s}").is_file() for s in (".csv", ".csv.gz"))


def read_table(root: Path, name: str) -> pd.DataFrame:
    path = table_path(root, name)
    try:
        df = pd.read_csv(path, dtype={"dicom_id": str})
    except Exception as exc:  # pandas raises several types for corrupt files
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    missing = [c for c in TABLES[name] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    return root / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


def read_impression(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"report {path} is missing")
    try:
        return impression(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"report {path} is not UTF-8 text ({exc})") from exc


def check_jpg(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"image {path} is missing")
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # PIL raises several types for corrupt data
        raise ValueError(f"image {path} is not a readable JPEG ({exc})") from exc


def chexpert_labels(row: pd.Series) -> dict[str, int]:
    labels = {}
    for col, label in CHEXPERT_TO_LABEL.items():
        v = row.get(col)
        if v is not None and not pd.isna(v):
            labels[label] = int(v)
    return labels


def select_records(root: str | Path, sel: MimicSelection = MimicSelection()) -> list[Record]:
    """The paper's train/test selection as Records (train first, then test)."""
    from cxrl.reports.labeler import label_report

    root = Path(root)
    meta = read_table(root, "metadata")
    split = read_table(root, "split")[["dicom_id", "split"]]
    chex = read_table(root, "chexpert").set_index(["subject_id", "study_id"])
    chex = chex[~chex.index.duplicated(keep="first")]  # one label row per study
    df = meta.merge(split, on="dicom_id", how="inner")
    records: list[Record] = []
    for code, (name, n) in enumerate((("train", sel.n_train), ("test", sel.n_test))):
        if n <= 0:
            continue
        rng = np.random.default_rng([sel.seed, 5, code])
        part = df[(df["split"] == name) & df["ViewPosition"].isin(VIEWS[name])].sort_values("dicom_id")
        studies = sorted(part.groupby(["subject_id", "study_id"]).groups.items())
        found = 0
        for k in rng.permutation(len(studies)):
            (subject, study), idx = studies[k]
            sdir = study_dir(root, int(subject), int(study))
            text = read_impression(sdir.with_suffix(".txt"))
            if not text or count_tokens(text) > sel.max_tokens:
                continue
            row = part.loc[idx[int(rng.integers(len(idx)))]]
            jpg = sdir / f"{row['dicom_id']}.jpg"
            check_jpg(jpg)
            key = (int(subject), int(study))
            labels = chexpert_labels(chex.loc[key]) if key in chex.index else label_report(text)
            records.append(
                Record(str(row["dicom_id"]), name, text, str(row["ViewPosition"]), labels, jpg, None)
            )
            found += 1
            if found == n:
                break
        if found < n:
            raise ValueError(
                f"{root}: only {found} {name} pairs meet the selection (views {VIEWS[name]}, impression of "
                f"1..{sel.max_tokens} tokens); asked for {n}"
            )
    return records


def write_selection(root: str | Path, out: str | Path, sel: MimicSelection = MimicSelection()) -> Path:
    """Select and write ``out/metadata.csv`` (absolute image paths) and ``out/selection.json``."""
    records = select_records(root, sel)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["id", "split", "image", "report", "view"] + [column_name(x) for x in LABELS] + list(PSI_NAMES)
    tmp = out / f".metadata.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in records:
            row = {
                "id": r.id,
                "split": r.split,
                "image": str(r.image_path.resolve()),
                "report": r.report,
                "view": r.view,
            }
            row.update({column_name(k): str(v) for k, v in r.labels.items()})
            writer.writerow(row)
    os.replace(tmp, out / "metadata.csv")
    info = {"root": str(Path(root).resolve()), **asdict(sel), "views": VIEWS, "pairs": len(records)}
    (out / "selection.json").write_text(json.dumps(info, indent=1))
    return out / "metadata.csv"
