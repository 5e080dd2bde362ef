"""Filling the operating points a diagnostic checkpoint lacks (cxrl.pretrain.calibrate)."""

import numpy as np

from cxrl.labels import XRV_PATHOLOGIES
from cxrl.pretrain.calibrate import fill_missing

PT, MASS = XRV_PATHOLOGIES.index("Pleural_Thickening"), XRV_PATHOLOGIES.index("Mass")


def test_missing_operating_points_are_filled_by_youden_from_the_first_set_with_positives():
    stored = np.full(18, 0.5)
    stored[[PT, MASS]] = np.nan
    scores = np.tile(np.linspace(0.1, 0.9, 6)[:, None], (1, 18))  # [6,18]
    a_targets = np.full((6, 18), np.nan)
    a_targets[:, PT] = [0, 0, 0, 1, 1, 1]  # separable: the best cut is the lowest positive, 0.58
    a_targets[:, MASS] = 0  # no positive here: Mass stays open
    b_targets = np.full((6, 18), np.nan)
    b_targets[:, MASS] = [0, 1, 1, 1, 1, 1]  # separable at the lowest positive, 0.26
    b_targets[:, PT] = [1, 1, 1, 0, 0, 0]  # would give another PT point: the first set's wins
    filled, source = fill_missing(stored, [("a", scores, a_targets), ("b", scores, b_targets)])
    assert source == {"Pleural_Thickening": "a", "Mass": "b"}
    assert np.isclose(filled[PT], 0.58) and np.isclose(filled[MASS], 0.26)
    keep = [j for j in range(18) if j not in (PT, MASS)]
    np.testing.assert_array_equal(filled[keep], stored[keep])  # the others are left as they are
    assert np.isnan(stored[PT])  # the input is not modified
