"""MS-SSIM diversity: scale selection, closed-form golden values, and pairwise averaging."""

import math

import pytest
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from cxrl.eval import msssim

C1 = (0.01 * 1.0) ** 2


def luminance(a, b):
    # SSIM luminance term of two constant images; their contrast/structure terms are exactly 1
    return (2 * a * b + C1) / (a * a + b * b + C1)


@pytest.mark.parametrize(
    "side,scales",
    [(256, 5), (176, 5), (175, 4), (128, 4), (64, 3), (44, 3), (43, 2), (32, 2), (21, 1), (11, 1)],
)
def test_scales_chosen_for_image_size(side, scales):
    s = msssim.settings_for(side, side + 7)
    assert s.scales == scales
    assert s.kernel_size == 11 and s.sigma == 1.5
    assert sum(s.betas) == pytest.approx(sum(msssim.WANG_BETAS) if scales == 5 else 1.0)


def test_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        msssim.settings_for(10, 64)


@pytest.mark.parametrize("side", [256, 64])
def test_constant_images_match_closed_form(side):
    # For constant images only the coarsest luminance term differs from 1:
    # MS-SSIM = l(a, b) ** beta_last (the renormalised last weight for small images).
    a, b = 0.4, 0.6
    x = torch.full((1, 1, side, side), a)
    y = torch.full((1, 1, side, side), b)
    beta_last = msssim.settings_for(side, side).betas[-1]
    expected = luminance(a, b) ** beta_last
    if side == 256:
        assert beta_last == 0.1333
    else:
        assert beta_last == pytest.approx(0.3001 / (0.0448 + 0.2856 + 0.3001))
    assert float(msssim.msssim(x, y)[0]) == pytest.approx(expected, rel=1e-5)
    golden = {256: 0.98939, 64: 0.96263}[side]  # l(0.4, 0.6) = 0.923092
    assert float(msssim.msssim(x, y)[0]) == pytest.approx(golden, abs=2e-5)


def test_large_images_use_torchmetrics_defaults_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 192, 192, generator=g)
    y = (x + 0.1 * torch.rand(2, 1, 192, 192, generator=g)).clamp(0, 1)
    ours = msssim.msssim(x, y)
    theirs = multiscale_structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)


def test_identical_images_score_one_and_noise_scores_low():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 1, 64, 64, generator=g)
    same = img.expand(3, 1, 64, 64).contiguous()
    assert msssim.pairwise_msssim(same) == pytest.approx(1.0, abs=1e-6)
    noise = torch.rand(3, 1, 64, 64, generator=g)
    assert msssim.pairwise_msssim(noise) < 0.2


def test_pairwise_mean_covers_all_pairs():
    g = torch.Generator().manual_seed(2)
    imgs = torch.rand(4, 1, 64, 64, generator=g)
    pairs = [msssim.msssim(imgs[i : i + 1], imgs[j : j + 1])[0] for i in range(4) for j in range(i + 1, 4)]
    assert len(pairs) == 6
    assert msssim.pairwise_msssim(imgs) == pytest.approx(float(torch.stack(pairs).mean()), rel=1e-6)


def test_more_varied_groups_score_lower():
    g = torch.Generator().manual_seed(3)
    base = torch.rand(1, 1, 64, 64, generator=g)
    close = (base + 0.05 * torch.randn(4, 1, 64, 64, generator=g)).clamp(0, 1)
    far = (base + 0.4 * torch.randn(4, 1, 64, 64, generator=g)).clamp(0, 1)
    per_prompt = msssim.prompt_diversity([close, far])
    assert per_prompt.shape == (2,)
    assert per_prompt[0] > per_prompt[1]
    assert all(math.isfinite(v) for v in per_prompt)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least 2 images"):
        msssim.pairwise_msssim(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="one shape"):
        msssim.msssim(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 48))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        msssim.msssim(torch.rand(1, 1, 64, 64) * 2, torch.rand(1, 1, 64, 64))
