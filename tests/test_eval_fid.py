"""FID: closed-form Gaussians, scipy's sqrtm, torchmetrics' formula, and the xrv feature extractor."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torchxrayvision as xrv
from torchmetrics.image.fid import _compute_fid

from cxrl import imaging
from cxrl.eval import fid


def random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T) / d + 0.1 * np.eye(d)


def test_commuting_gaussians_match_closed_form():
    # Diagonal covariances commute: d^2 = |mu1-mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert expected == pytest.approx(13.25)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(13.25, abs=1e-10)


def test_identical_distributions_give_zero():
    rng = np.random.default_rng(0)
    s = random_spd(rng, 6)
    mu = rng.normal(size=6)
    assert fid.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_non_commuting_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=3.0)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    # Symmetric in its arguments
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(reference, rel=1e-8)


def test_feature_matrices_match_torchmetrics_fid_formula():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    y = rng.normal(loc=0.5, size=(250, 16)) * 1.7
    sx, sy = fid.gaussian_stats(x), fid.gaussian_stats(y)
    np.testing.assert_allclose(sx.sigma, np.cov(x, rowvar=False), rtol=1e-12)
    t = {k: torch.from_numpy(v) for k, v in dict(m1=sx.mu, s1=sx.sigma, m2=sy.mu, s2=sy.sigma).items()}
    theirs = float(_compute_fid(t["m1"], t["s1"], t["m2"], t["s2"]))
    assert fid.fid(x, y) == pytest.approx(theirs, rel=1e-6)
    assert fid.fid(y, x) == pytest.approx(theirs, rel=1e-6)


def test_sampled_gaussians_converge_to_closed_form():
    rng = np.random.default_rng(3)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1 = np.diag([1.0, 2.0, 0.5, 1.0])
    s2 = np.diag([2.0, 0.5, 0.5, 3.0])
    expected = fid.frechet_distance(mu1, s1, mu2, s2)
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    assert fid.fid(x, y) == pytest.approx(expected, abs=0.03)


def test_reference_reuses_its_square_root():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(100, 8))
    ref = fid.FrechetReference(real)
    for shift in (0.0, 1.0):
        cand = rng.normal(loc=shift, size=(80, 8))
        assert ref.distance(cand) == pytest.approx(fid.fid(cand, real), rel=1e-9)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least 2"):
        fid.gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fid.gaussian_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="dimension"):
        fid.fid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="features2"):
        fid.XrvFeatureExtractor(torch.nn.Linear(2, 2), input_size=32)


@pytest.fixture(scope="module")
def tiny_densenet():
    torch.manual_seed(0)
    return xrv.models.DenseNet(
        growth_rate=4, block_config=(1, 1), num_init_features=8, num_classes=18, weights=None
    ).eval()


def test_extractor_returns_pooled_features(tiny_densenet):
    ext = fid.XrvFeatureExtractor(tiny_densenet, input_size=32, batch_size=3)
    images = torch.rand(7, 1, 48, 40)
    feats = ext(images)
    assert feats.shape == (7, ext.dim)
    # Same as calling features2 on the xrv-normalised, resized batch at once (batching does not matter)
    with torch.no_grad():
        expected = tiny_densenet.features2(imaging.to_xrv(images, size=32))
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    assert (feats >= 0).all()  # ReLU before pooling


def test_fid_on_features_separates_shifted_images(tiny_densenet):
    ext = fid.XrvFeatureExtractor(tiny_densenet, input_size=32)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 32, 32, generator=g) * 0.5
    same = torch.rand(64, 1, 32, 32, generator=g) * 0.5
    bright = torch.rand(64, 1, 32, 32, generator=g) * 0.5 + 0.5
    ref = fid.FrechetReference(ext(real))
    assert ref.distance(ext(same)) < ref.distance(ext(bright))


@pytest.mark.slow  # the 224 px DenseNet-121
def test_released_architecture_gives_1024_features():
    # densenet121-res224-all's architecture (random weights here): 1024 pooled features at 224 px
    net = xrv.models.DenseNet(weights=None).eval()
    ext = fid.XrvFeatureExtractor(net, input_size=224)
    assert ext.dim == 1024
    feats = ext(torch.rand(2, 1, 64, 64))
    assert feats.shape == (2, 1024) and torch.isfinite(feats).all()
