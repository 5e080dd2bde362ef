"""Which parts of the world keep alignment from recovering posture? (docs/results/posture-default-world.md)

Re-renders test images of the default world (seed 0) at SIZE px with the anatomy ranges of one
variant, builds the template from 300 training renders, fits psi per image on the alignment
loss (cxrl.eval.posture_ceiling.fit_psi) and prints the ceiling Spearman and per-parameter
errors. Nothing is written.

    python docs/results/posture_ablation.py ANATOMY TEMPLATE PADDING SIZE [N] [--no-findings]

ANATOMY: ``wide`` (the v1 world's ranges: body width 1.14-1.26, clavicles -0.70..-0.60, rib
phase +-0.15, rib count 9.2-10.2), ``narrow`` (the current ranges), ``wide-trunk`` (v1 with
body width and clavicles narrowed only). TEMPLATE: ``posed`` (mean of posed renders, the v1
world's canonical.png) or ``unposed`` (mean of the renders in the canonical frame, the current
canonical.png). PADDING: ``zeros`` or ``border``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from cxrl.eval.posture_ceiling import fit_psi, score
from cxrl.world import anatomy, build
from cxrl.world.render import Renderer

ANATOMY = {
    "wide": {"body_width": (1.14, 1.26), "clavicle_y": (-0.7, -0.6), "rib_phase": (-0.15, 0.15),
             "rib_count": (9.2, 10.2)},
    "wide-trunk": {"body_width": (1.19, 1.21), "clavicle_y": (-0.66, -0.64), "rib_phase": (-0.15, 0.15),
                   "rib_count": (9.2, 10.2)},
    "narrow": {},
}  # fmt: skip


def main(argv: list[str]) -> None:
    flags = [a for a in argv if a.startswith("--")]
    args = [a for a in argv if not a.startswith("--")]
    kind, template, padding, size = args[0], args[1], args[2], int(args[3])
    n = int(args[4]) if len(args) > 4 else 200
    torch.set_num_threads(1)
    ranges = ANATOMY[kind]
    sample = anatomy.AnatomyParams.sample

    def patched(rng: np.random.Generator) -> anatomy.AnatomyParams:
        p = sample(rng)
        for name, (lo, hi) in ranges.items():  # redraw from the variant's range (same rng stream)
            setattr(p, name, float(lo + (getattr(p, name) - _NARROW[name][0]) / _span(name) * (hi - lo)))
        return p

    anatomy.AnatomyParams.sample = staticmethod(patched)
    cfg = build.WorldConfig()
    jobs, _ = build.make_jobs(cfg)
    renderer = Renderer(size)

    def render(js: list, canonical_frame: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, psis = [], []
        for job in js:
            rng, mask_index, psi, draws = build.plan_draws(job, cfg.seed, renderer.n_masks)
            if "--no-findings" in flags:
                draws = []
            out = renderer.render(mask_index, draws, psi, rng)
            images.append(out.canonical if canonical_frame else out.image)
            psis.append(psi)
        return torch.from_numpy(np.stack(images))[:, None], torch.tensor(psis, dtype=torch.float32)

    train, _ = render([j for j in jobs if j.split == "train"][:300], canonical_frame=template == "unposed")
    images, truth = render([j for j in jobs if j.split == "test"][:n], canonical_frame=False)
    fitted = fit_psi(images, train.mean(dim=0, keepdim=True), padding=padding)
    result = {"anatomy": kind, "template": template, "padding": padding, "size": size, "flags": flags}
    print(json.dumps({**result, **score(fitted, truth)}))


# the current (narrow) ranges, mapped linearly onto a variant's range so every patient keeps its draw
_NARROW = {"body_width": (1.19, 1.21), "clavicle_y": (-0.66, -0.64), "rib_phase": (-0.03, 0.03),
           "rib_count": (9.6, 9.8)}  # fmt: skip


def _span(name: str) -> float:
    lo, hi = _NARROW[name]
    return hi - lo


if __name__ == "__main__":
    main(sys.argv[1:])
