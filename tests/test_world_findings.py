"""Every label of the vocabulary is visible, and lateral findings stay on the side the report gives."""

import numpy as np
import pytest

from cxrl.labels import LABELS, NO_FINDING
from cxrl.world.devices import DEVICES
from cxrl.world.findings import ADJUSTERS, RENDERERS
from cxrl.world.render import Draw, Renderer

LATERAL = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Nodule",
    "Mass",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
)
BILATERAL = ("Edema", "Emphysema", "Enlarged Cardiomediastinum")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(64)


def _diff(renderer, draws, mask=7, seed=3):
    base = renderer.render(mask, [], rng=np.random.default_rng(seed), detector=False).canonical
    img = renderer.render(mask, draws, rng=np.random.default_rng(seed), detector=False).canonical
    return np.abs(img - base)  # [64, 64]


def test_every_label_has_a_renderer():
    drawable = set(RENDERERS) | {"Support Devices"}
    assert drawable == set(LABELS) - {NO_FINDING}
    assert set(ADJUSTERS) <= set(RENDERERS)
    assert len(DEVICES) == 5


@pytest.mark.parametrize("label", [lab for lab in LABELS if lab != NO_FINDING])
def test_every_finding_changes_the_image(renderer, label):
    d = _diff(renderer, [Draw(label, -1, 1.0)])
    assert d.max() > 0.05, f"{label} is invisible"


@pytest.mark.parametrize("label", LATERAL)
@pytest.mark.parametrize("side", [-1, 1])
def test_lateral_findings_stay_on_their_side(renderer, label, side):
    d = _diff(renderer, [Draw(label, side, 1.0)])
    shown, other = (d[:, :32], d[:, 32:]) if side == -1 else (d[:, 32:], d[:, :32])
    assert shown.sum() > 0.5, f"{label} side {side} not drawn"
    assert other.sum() < 0.05 * shown.sum(), f"{label} side {side} leaks to the other lung"


@pytest.mark.parametrize("label", BILATERAL)
def test_bilateral_findings_show_on_both_sides(renderer, label):
    d = _diff(renderer, [Draw(label, 0, 1.0)])
    assert d[:, :32].sum() > 1.0 and d[:, 32:].sum() > 1.0


def test_half_strength_is_fainter(renderer):
    full = _diff(renderer, [Draw("Effusion", 1, 1.0)])
    half = _diff(renderer, [Draw("Effusion", 1, 0.5)])
    assert 0 < half.sum() < full.sum()
