import numpy as np
import pytest
import torch

from cxrl.world.posture import align, valid_region
from cxrl.world.render import Draw, Renderer, side_of


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(64)


def test_aligning_with_recorded_psi_recovers_the_unposed_render(renderer):
    psi = (1.12, 0.93, 0.07, -0.05, 0.14)
    out = renderer.render(3, [], psi, np.random.default_rng(1), detector=False)
    posed = torch.from_numpy(out.image)[None, None]  # [1,1,64,64]
    back = align(posed, torch.tensor([psi]))[0, 0]
    valid = valid_region(torch.tensor([psi]), 64, inset=0.06)[0]
    canon = torch.from_numpy(out.canonical)
    err = (back - canon).abs()[valid]
    assert valid.float().mean() > 0.5
    assert err.mean() < 0.02, err.mean()
    # the posed image itself is far from the canonical one
    assert (posed[0, 0] - canon).abs()[valid].mean() > 3 * err.mean()


def test_recovery_holds_with_detector_noise(renderer):
    psi = (0.88, 0.9, -0.08, 0.06, -0.16)
    out = renderer.render(10, [Draw("Effusion", -1, 1.0)], psi, np.random.default_rng(2))
    back = align(torch.from_numpy(out.image)[None, None], torch.tensor([psi]))[0, 0]
    valid = valid_region(torch.tensor([psi]), 64, inset=0.06)[0]
    diff = (back - torch.from_numpy(out.canonical))[valid]
    # only noise, blur and exposure remain: errors are small and the images correlate strongly
    a, b = back[valid], torch.from_numpy(out.canonical)[valid]
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert corr > 0.95, corr
    assert diff.abs().mean() < 0.08


def test_same_rng_same_pixels_and_images_in_range(renderer):
    draws = [Draw("Nodule", 1, 1.0), Draw("Support Devices", 0, 1.0)]
    a = renderer.render(5, draws, (1, 1, 0, 0, 0), np.random.default_rng(7))
    b = renderer.render(5, draws, (1, 1, 0, 0, 0), np.random.default_rng(7))
    assert np.array_equal(a.image, b.image)
    assert a.image.dtype == np.float32 and a.image.shape == (64, 64)
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert a.devices, "support devices must draw at least one device"


def _mean(img, region):
    return float(img[region].mean())


def test_findings_show_on_the_reported_side(renderer):
    # effusion on the patient's right (image left) brightens the left lower image quadrant
    rng = np.random.default_rng
    base = renderer.render(0, [], rng=rng(11), detector=False).canonical
    eff = renderer.render(0, [Draw("Effusion", -1, 1.0)], rng=rng(11), detector=False).canonical
    lower_left = np.s_[40:48, 10:26]
    lower_right = np.s_[40:48, 38:54]
    assert _mean(eff, lower_left) > _mean(base, lower_left) + 0.03
    assert abs(_mean(eff, lower_right) - _mean(base, lower_right)) < 0.01


def test_cardiomegaly_enlarges_the_heart(renderer):
    rng = np.random.default_rng
    base = renderer.render(0, [], rng=rng(4), detector=False).canonical
    big = renderer.render(0, [Draw("Cardiomegaly", 0, 1.0)], rng=rng(4), detector=False).canonical
    # more bright (non-air) area in the lower middle of the chest
    region = np.s_[30:48, 16:52]
    assert (big[region] > 0.6).mean() > (base[region] > 0.6).mean() + 0.05


def test_pneumothorax_darkens_the_upper_lung(renderer):
    rng = np.random.default_rng
    base = renderer.render(2, [], rng=rng(5), detector=False).canonical
    ptx = renderer.render(2, [Draw("Pneumothorax", 1, 1.0)], rng=rng(5), detector=False).canonical
    # the apicolateral rim of the left lung (image right) loses its markings and darkens
    diff = ptx - base
    assert diff[12:30, 32:64].min() < -0.1
    assert np.abs(diff[:, :32]).max() < 1e-6  # the other lung is untouched


def test_side_of_laterality():
    rng = np.random.default_rng(0)
    assert side_of("left", "Effusion", rng) == 1
    assert side_of("right", "Effusion", rng) == -1
    assert side_of("bilateral", "Effusion", rng) == 0
    assert side_of("unspecified", "Edema", rng) == 0
    assert {side_of("unspecified", "Nodule", rng) for _ in range(50)} == {-1, 0, 1}


def test_unknown_label_is_an_error(renderer):
    with pytest.raises(ValueError, match="no renderer"):
        renderer.render(0, [Draw("Bogus", 1, 1.0)])


def test_too_small_size_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        Renderer(16)
