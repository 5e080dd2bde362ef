"""The per-image alignment optimum (cxrl.eval.posture_ceiling) recovers posture where it is identifiable."""

import json

import torch

from cxrl.eval.posture_ceiling import fit_psi, main, score
from cxrl.world.posture import pose_matrix, warp


def chest_like(size: int = 48) -> torch.Tensor:
    """Two dark ovals (lungs) in a bright frame with an off-centre bright blob: no symmetry to confuse psi."""
    v = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(v, v, indexing="ij")
    img = 0.8 - 0.5 * (((x + 0.4) / 0.3) ** 2 + (y / 0.55) ** 2 < 1).float()
    img = img - 0.4 * (((x - 0.4) / 0.28) ** 2 + ((y - 0.05) / 0.5) ** 2 < 1).float()
    img = img + 0.3 * torch.exp(-(((x - 0.2) / 0.15) ** 2 + ((y - 0.4) / 0.1) ** 2))
    return torch.nn.functional.avg_pool2d(img[None, None], 3, 1, 1).clamp(0, 1)  # [1,1,S,S], soft edges


def test_fit_recovers_the_posture_of_posed_copies():
    canonical = chest_like()
    g = torch.Generator().manual_seed(0)
    n = 12
    s = 0.92 + 0.16 * torch.rand(n, generator=g)
    truth = torch.stack(
        [
            s,
            s * (0.98 + 0.04 * torch.rand(n, generator=g)),
            0.16 * torch.rand(n, generator=g) - 0.08,
            0.16 * torch.rand(n, generator=g) - 0.08,
            0.24 * torch.rand(n, generator=g) - 0.12,
        ],
        dim=1,
    )
    posed = warp(canonical.expand(n, 1, 48, 48), pose_matrix(truth), padding="border")
    fitted = fit_psi(posed, canonical, steps=300)
    result = score(fitted, truth)
    assert result["spearman_r_align"] > 0.9
    assert max(result[f"mae_{k}"] for k in ("sx", "sy", "tx", "ty")) < 0.02 and result["mae_theta"] < 0.02
    assert result["n"] == n


def test_cli_reports_the_ceiling_for_both_templates(tiny_world, capsys):
    for template in ("canonical", "posed-mean"):
        assert (
            main(
                [
                    "--data",
                    str(tiny_world),
                    "--n",
                    "8",
                    "--size",
                    "32",
                    "--steps",
                    "5",
                    "--template",
                    template,
                ]
            )
            == 0
        )
        out = json.loads(capsys.readouterr().out)
        assert out["template"] == template and out["n"] == 8
        assert -1 <= out["spearman_r_align"] <= 1 and out["mae_sx"] >= 0
