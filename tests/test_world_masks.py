import numpy as np

from cxrl.world.masks import LUNG_BOX, check_mask, load_mask_set, place


def _two_lungs(h=120, w=160):
    m = np.zeros((h, w), bool)
    m[20:100, 20:70] = True
    m[25:100, 90:140] = True
    return m


def test_check_mask_accepts_two_lungs_and_labels_image_left_first():
    crop, reason = check_mask(_two_lungs())
    assert reason == "ok"
    assert crop.shape == (80, 120)
    assert crop[40, 10] == 1 and crop[40, 100] == 2


def test_check_mask_rejects_unusable_masks():
    assert check_mask(np.zeros((100, 100), bool))[1] == "empty"
    one = np.zeros((120, 160), bool)
    one[20:100, 20:70] = True
    assert check_mask(one)[1] == "one lung"
    border = _two_lungs()
    border[0:10, 20:70] = True
    assert check_mask(border)[1] == "touches border"
    tiny = np.zeros((400, 400), bool)
    tiny[100:110, 100:110] = True
    tiny[100:110, 200:210] = True
    assert check_mask(tiny)[1] == "tiny"


def test_place_fills_the_lung_box():
    crop, _ = check_mask(_two_lungs())
    out = place(crop, 96, 1.5)
    ys, xs = np.nonzero(out)
    to_unit = lambda p: (p + 0.5) / 96 * 3.0 - 1.5  # noqa: E731
    assert abs(to_unit(xs.min()) - LUNG_BOX[0]) < 0.08 and abs(to_unit(xs.max()) - LUNG_BOX[1]) < 0.08
    assert abs(to_unit(ys.min()) - LUNG_BOX[2]) < 0.08 and abs(to_unit(ys.max()) - LUNG_BOX[3]) < 0.08
    assert set(np.unique(out)) == {0, 1, 2}


def test_real_mask_set():
    ms = load_mask_set(96, 1.5)
    assert len(ms.labels) > 300 and ms.labels.shape[1:] == (96, 96)
    assert sum(ms.rejected.values()) + len(ms.labels) == 517
    for lab in ms.labels[:20]:
        left = np.nonzero(lab == 1)[1]
        right = np.nonzero(lab == 2)[1]
        assert left.size and right.size and left.mean() < right.mean()
