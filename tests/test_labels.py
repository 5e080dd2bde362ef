"""The label vocabulary matches torchxrayvision and validates values."""

import pytest
import torchxrayvision as xrv

from cxrl import labels


def test_vocabulary_is_xrv_defaults_plus_two():
    assert list(labels.XRV_PATHOLOGIES) == list(xrv.datasets.default_pathologies)
    assert labels.LABELS[-2:] == ("No Finding", "Support Devices")
    assert len(labels.LABELS) == 20 and len(set(labels.LABELS)) == 20


def test_column_names_are_unique_and_csv_safe():
    cols = [labels.column_name(name) for name in labels.LABELS]
    assert len(set(cols)) == len(cols)
    assert labels.column_name("Lung Opacity") == "lung_opacity"
    assert all(" " not in c and c == c.lower() for c in cols)
    with pytest.raises(ValueError, match="unknown label"):
        labels.column_name("Tumour")


def test_validate_labels():
    assert labels.validate_labels({"Edema": 1, "Mass": -1, "No Finding": 0}) == {
        "Edema": 1,
        "Mass": -1,
        "No Finding": 0,
    }
    with pytest.raises(ValueError, match="unknown label"):
        labels.validate_labels({"edema": 1})
    with pytest.raises(ValueError, match="expected 1, 0 or -1"):
        labels.validate_labels({"Edema": 2})
