"""How far alignment alone can take the posture reward on a dataset with ground-truth posture.

The posture net is trained to minimise the L2 between the image warped by its psi and the
canonical CXR, so it aims at the psi that minimises that loss for each image: the best to
expect from any network trained on it. This module fits that psi directly (Adam on the five numbers,
all images at once, starting from the identity) and scores it like the trained net:
Spearman(r_align(fitted psi), r_align(true psi)), mean absolute error, and the signed bias
of each parameter (a bias means the loss minimum sits off the frame psi refers to).

    python -m cxrl.eval.posture_ceiling --data data/world --n 200 --size 128

``--template posed-mean`` uses the mean of posed training images instead of the dataset's
``canonical.png``; ``--padding zeros`` warps with black outside the picture. Both were the
project's earlier choices and are kept to show why they were changed
(docs/results/posture-default-world.md).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from cxrl import imaging
from cxrl.models.posture import PSI_NAMES, warp
from cxrl.pretrain.common import load_split
from cxrl.pretrain.posture import true_psi
from cxrl.rewards.types import r_align


def fit_psi(
    images: torch.Tensor, canonical: torch.Tensor, steps: int = 300, lr: float = 0.01, padding: str = "border"
) -> torch.Tensor:
    """psi ``[N,5]`` minimising each image's alignment L2 to ``canonical`` (float images in [0,1])."""
    psi = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]]).repeat(images.shape[0], 1).requires_grad_()
    opt = torch.optim.Adam([psi], lr=lr)
    for _ in range(steps):
        loss = (warp(images, psi, padding) - canonical).pow(2).mean(dim=(1, 2, 3)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return psi.detach()


def score(fitted: torch.Tensor, truth: torch.Tensor) -> dict:
    """Spearman of r_align, and per-parameter MAE, signed bias and Pearson correlation."""
    out: dict = {
        "spearman_r_align": float(spearmanr(r_align(fitted).numpy(), r_align(truth).numpy()).statistic),
        "n": int(truth.shape[0]),
    }
    for k, name in enumerate(PSI_NAMES):
        d = fitted[:, k] - truth[:, k]
        out[f"mae_{name}"] = float(d.abs().mean())
        out[f"bias_{name}"] = float(d.mean())
        out[f"corr_{name}"] = float(np.corrcoef(fitted[:, k].numpy(), truth[:, k].numpy())[0, 1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cxrl.eval.posture_ceiling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", required=True, help="dataset directory with ground-truth posture (a world)")
    parser.add_argument("--n", type=int, default=200, help="test images to fit")
    parser.add_argument("--size", type=int, default=128, help="resolution of the comparison in pixels")
    parser.add_argument("--template", choices=("canonical", "posed-mean"), default="canonical")
    parser.add_argument("--padding", choices=("border", "zeros"), default="border")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, records = load_split(args.data, "test", args.size, args.n)
    truth = true_psi(records)
    if truth is None:
        raise SystemExit(f"{args.data} records no ground-truth posture; the ceiling needs a world directory")
    if args.template == "canonical":
        path = Path(args.data) / "canonical.png"
        if not path.is_file():
            raise SystemExit(f"{path} is missing; build the world again or use --template posed-mean")
        canonical = imaging.resize(imaging.load_image(path)[None], args.size)
    else:
        train, _ = load_split(args.data, "train", args.size, 500)
        canonical = imaging.from_uint8(train).mean(dim=0, keepdim=True)
    fitted = fit_psi(imaging.from_uint8(images), canonical, args.steps, padding=args.padding)
    result = {**vars(args), **score(fitted, truth)}
    result["mae_theta_deg"] = math.degrees(result["mae_theta"])
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
