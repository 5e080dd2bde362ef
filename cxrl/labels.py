"""The label vocabulary shared by the report labeler, the world, and the diagnostic reward.

torchxrayvision's 18 ``default_pathologies`` (same order, same spelling) plus
``No Finding`` and ``Support Devices``. Values: 1 positive, 0 negative,
-1 uncertain; a label that the report does not mention is absent.
"""

from __future__ import annotations

# Same order and spelling as torchxrayvision.datasets.default_pathologies
# (checked by tests/test_labels.py against the installed package).
XRV_PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

LABELS: tuple[str, ...] = XRV_PATHOLOGIES + (NO_FINDING, SUPPORT_DEVICES)

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
VALUES: frozenset[int] = frozenset({POSITIVE, NEGATIVE, UNCERTAIN})

LATERALITIES: tuple[str, ...] = ("left", "right", "bilateral", "unspecified")


def column_name(label: str) -> str:
    """CSV-safe column name for a label ('Lung Opacity' -> 'lung_opacity')."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
    return label.lower().replace(" ", "_")


def validate_labels(labels: dict[str, int]) -> dict[str, int]:
    """Check a label dict against the vocabulary and value set; return it unchanged."""
    for name, value in labels.items():
        if name not in LABELS:
            raise ValueError(f"unknown label {name!r}; expected one of {', '.join(LABELS)}")
        if value not in VALUES:
            raise ValueError(f"label {name!r} has value {value!r}; expected 1, 0 or -1")
    return labels
