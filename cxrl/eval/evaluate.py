"""The one held-out evaluation: the anchor and generators on the same (report, seed) pairs.

Every model generator samples each held-out report ``K`` times with the noise seeds of
:mod:`cxrl.eval.heldout`, with the run's sampler settings; images (and those of other sources:
real test images, an image directory) are scored by the reward backend (in process or over gRPC),
by the xrv feature model for FID (:func:`feature_model`: the in-process backend's diagnostic model, or
over gRPC the same model loaded here), and per report by MS-SSIM.
:mod:`cxrl.eval.scores` turns the scores into metrics with bootstrap intervals over reports and
into paired policy − anchor differences. The anchor's side is computed once (on another thread
with a :class:`~cxrl.rl.frozen_anchor.FrozenAnchor` if given: :class:`~cxrl.rl.anchor_ahead.AnchorAhead` calls
:meth:`Evaluator.anchor` after its last epoch). Used by the trainer at the end of a run
(``eval.json``), by `cxrl evaluate` and by `cxrl reproduce`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cxrl import imaging
from cxrl.eval import msssim
from cxrl.eval.bootstrap import Estimate
from cxrl.eval.fid import FrechetReference, XrvFeatureExtractor
from cxrl.eval.heldout import FidFeatures, HeldOutConfig, Prompt, held_out_seed
from cxrl.eval.imagedir import Group, ImageDirWriter
from cxrl.eval.scores import PER_IMAGE, Scored, metrics, paired_difference
from cxrl.infra.retry import call_with_retries
from cxrl.rewards.factory import RewardModelsConfig, build_diagnostic
from cxrl.rewards.types import COMPONENT_OF, REWARDS, Components, ModelInfo, RewardBackend
from cxrl.rl.config import SamplingSettings
from cxrl.rl.frozen_anchor import FrozenAnchor
from cxrl.rl.policy import Policy
from cxrl.rl.rlcf import direct_total
from cxrl.rl.sampler import sample_images

log = logging.getLogger(__name__)

CHUNK_IMAGES = 64  # images sampled and scored at a time (whole reports): bounds memory


@dataclass
class EvalGrid:
    """Policy and anchor images of fixed held-out reports at one evaluation."""

    epoch: int
    reports: list[str]
    anchor_png: list[bytes]  # one 8-bit PNG per report
    policy_png: list[bytes]

    def __post_init__(self) -> None:
        if not len(self.reports) == len(self.anchor_png) == len(self.policy_png):
            raise ValueError(
                f"grid at epoch {self.epoch}: {len(self.reports)} reports, {len(self.anchor_png)} anchor "
                f"and {len(self.policy_png)} policy images; give one of each per report"
            )


def feature_model(
    backend: RewardBackend, mode: FidFeatures = "auto", models: RewardModelsConfig | None = None
) -> XrvFeatureExtractor | None:
    """The FID feature model (a diagnostic xrv DenseNet's features2) as ``mode`` says
    (:attr:`~cxrl.eval.heldout.HeldOutConfig.fid_features`): 'auto' = the in-process backend's diagnostic
    model, else (rewards over gRPC) the diagnostic model that ``models`` names, loaded in this process
    (None without ``models``); 'off' = None."""
    if mode == "off":
        return None
    diagnostic = getattr(backend, "diagnostic", None)
    if diagnostic is None and models is not None:
        diagnostic = build_diagnostic(models)
        log.info(
            "FID features: %s (%s) loaded in this process", diagnostic.info.name, diagnostic.info.version
        )
        _check_served(backend, diagnostic.info)
    model = getattr(diagnostic, "model", None)
    if model is None or not hasattr(model, "features2"):
        return None
    return XrvFeatureExtractor(model, diagnostic.input_size)


def _check_served(backend: RewardBackend, info: ModelInfo) -> None:
    """Warn when the reward service does not serve the diagnostic model FID's features come from."""
    try:
        served = backend.info()
    except Exception as exc:  # only a check: the run's own reward calls report an unreachable service
        log.warning("could not ask the reward service for its models (%s); FID uses %s", exc, info.name)
        return
    if not any(m.weights_hash == info.weights_hash for m in served):
        log.warning(
            "FID features come from %s %s (weights %s..., the reward model settings), a model the reward "
            "service does not serve (%s): make the settings name the service's diagnostic model",
            info.name,
            info.version,
            info.weights_hash[:12],
            ", ".join(f"{m.name} {m.version}" for m in served),
        )


class Evaluator:
    """Samples and scores generators on the held-out pairs; compares each with the anchor."""

    def __init__(
        self,
        cfg: HeldOutConfig,
        prompts: Sequence[Prompt],
        sampling: SamplingSettings,
        backend: RewardBackend,
        weights: dict[str, float],
        policy: Policy | None = None,
        features: XrvFeatureExtractor | None = None,
        frozen_anchor: FrozenAnchor | None = None,
        grid_prompts: int = 0,
        retries: int = 0,
        backoff_s: float = 1.0,
    ):
        """``policy``: the trained policy (its anchor mode is the anchor unless ``frozen_anchor``);
        ``features``: FID's feature model (:func:`feature_model`), unused when ``cfg.fid_features`` is 'off'."""
        if len(prompts) < 2:
            raise ValueError(f"need at least 2 held-out reports, got {len(prompts)}")
        self.cfg, self.prompts = cfg, list(prompts)
        self.sampling, self.backend, self.weights = sampling, backend, dict(weights)
        if cfg.fid_features == "off":
            features = None
        elif features is not None and sum(p.image_path is not None for p in self.prompts) < 2:
            log.warning(
                "no FID: fewer than 2 of the %d held-out reports have a real test image to compare with "
                "(the reports of no dataset, e.g. the IU split of a run without data)",
                len(self.prompts),
            )
            features = None  # no reference: features would be computed for nothing
        self.policy, self.features, self.frozen_anchor = policy, features, frozen_anchor
        self.grid_n = min(grid_prompts, len(self.prompts))
        self.retries, self.backoff_s = retries, backoff_s
        k = cfg.samples_per_report
        self.reports = [p.report for p in self.prompts]  # [N]
        self.items = [r for r in self.reports for _ in range(k)]  # [N*K] image i*K + j: report i, seed j
        self.seeds = [held_out_seed(cfg.seed, r, j) for r in self.reports for j in range(k)]
        self._anchor: Scored | None = None
        self._anchor_grid: torch.Tensor | None = None  # [g, 1, H, W]
        self._anchor_lock = threading.Lock()
        self._references: dict[tuple[int, int] | None, FrechetReference | None] = {}

    # -- sampling and scoring ----------------------------------------------------------------------
    def _sample(
        self, policy: Policy | None, reports: list[str], seeds: list[int], anchor: bool
    ) -> torch.Tensor:
        if anchor and self.frozen_anchor is not None and policy is None:
            return self.frozen_anchor.sample(reports, seeds, self.sampling)  # [b, 1, H, W]
        policy = policy or self.policy
        if policy is None:
            raise ValueError("no policy to sample: give the evaluator a policy or a frozen anchor")
        return sample_images(policy, reports, seeds, self.sampling, anchor=anchor)

    def sampled(
        self,
        name: str,
        policy: Policy | None = None,
        anchor: bool = False,
        save: ImageDirWriter | None = None,
    ) -> Scored:
        """``policy`` (default: the evaluator's; ``anchor``: its anchor mode) on the held-out pairs.

        ``save`` receives every report's images (the ``images:DIR`` format)."""
        k = self.cfg.samples_per_report
        per_chunk = max(1, CHUNK_IMAGES // k) * k
        parts, grid = [], []
        for start in range(0, len(self.items), per_chunk):
            items, seeds = self.items[start : start + per_chunk], self.seeds[start : start + per_chunk]
            images = self._sample(policy, items, seeds, anchor)  # [b, 1, H, W]
            parts.append(self._measure(images, items, k))
            if save is not None:
                for i in range(0, len(items), k):
                    p = self.prompts[(start + i) // k]
                    save.add(Group(p.id, p.report, images[i : i + k]))
            grid += [images[i] for i in range(0, len(items), k) if (start + i) // k < self.grid_n]
        if anchor and grid and self._anchor_grid is None:
            self._anchor_grid = torch.stack(grid)
        return self._join(name, parts, self.reports, [k] * len(self.reports))

    def scored_groups(self, name: str, groups: Sequence[tuple[str, torch.Tensor]]) -> Scored:
        """Images that exist already: (report, images ``[K_i, 1, H, W]``) per report, in order."""
        parts = []
        for report, images in groups:
            imaging.validate(images, f"images of report {report[:40]!r}")
            parts.append(self._measure(images, [report] * images.shape[0], images.shape[0]))
        return self._join(name, parts, [r for r, _ in groups], [g.shape[0] for _, g in groups])

    def _measure(self, images: torch.Tensor, items: list[str], k: int) -> dict[str, Any]:
        """Scores of consecutive groups of ``k`` images of one report each."""
        c = Components.concat(
            [
                self._score(images[i : i + self.sampling.batch_size], items[i : i + self.sampling.batch_size])
                for i in range(0, len(items), self.sampling.batch_size)
            ]
        )
        ms = [
            msssim.pairwise_msssim(images[i : i + k]) if k >= 2 else float("nan")
            for i in range(0, len(items), k)
        ]
        return {
            "components": c,
            "features": None if self.features is None else self.features(images).numpy(),
            "msssim": ms,
            "size": tuple(images.shape[-2:]),
        }

    def _score(self, images: torch.Tensor, items: list[str]) -> Components:
        """One reward call (a sampling batch of images: within a gRPC message's limits)."""
        res, _ = call_with_retries(
            lambda: self.backend.score(images, items), self.retries, self.backoff_s, "evaluation reward call"
        )
        if res.policy is None:
            raise ValueError("reward backend returned no components")
        return res.policy

    def _join(self, name: str, parts: list[dict[str, Any]], reports: list[str], counts: list[int]) -> Scored:
        c = Components.concat([p["components"] for p in parts])
        values = {r.eval_metric: getattr(c, r.component) for r in REWARDS}
        if all(getattr(c, COMPONENT_OF[w]) is not None for w in self.weights):
            values["reward_total"] = direct_total(c, self.weights)
        sizes = {p["size"] for p in parts}
        return Scored(
            name,
            list(reports),
            np.repeat(np.arange(len(reports)), counts),
            {k: v.detach().cpu().numpy() for k, v in values.items() if v is not None and k in PER_IMAGE},
            None if c.diag_probs is None else c.diag_probs.detach().cpu().numpy(),
            None if self.features is None else np.concatenate([p["features"] for p in parts]),
            np.array([m for p in parts for m in p["msssim"]], dtype=np.float64),
            sizes.pop() if len(sizes) == 1 else None,
        )

    # -- the anchor, grids and the FID reference ---------------------------------------------------
    def anchor(self) -> Scored:
        """The anchor's side, computed once (a second caller waits for the first)."""
        with self._anchor_lock:
            if self._anchor is None:
                self._anchor = self.sampled("anchor", anchor=True)
            return self._anchor

    def grid(self, epoch: int) -> EvalGrid:
        """Policy vs anchor images of the first ``grid_prompts`` held-out reports (their first seed)."""
        reports = self.reports[: self.grid_n]
        seeds = [held_out_seed(self.cfg.seed, r, 0) for r in reports]
        if self._anchor_grid is None:
            self._anchor_grid = self._sample(None, reports, seeds, anchor=True)
        policy = self._sample(None, reports, seeds, anchor=False)
        return EvalGrid(epoch, reports, imaging.encode_pngs(self._anchor_grid), imaging.encode_pngs(policy))

    def reference(self, size: tuple[int, int] | None) -> FrechetReference | None:
        """Features of the real test images (resized to the generated ``size`` first); None without them."""
        if size not in self._references:
            paths = [p.image_path for p in self.prompts if p.image_path is not None]
            if self.features is None or len(paths) < 2:
                self._references[size] = None
                return None
            feats = []
            for start in range(0, len(paths), 32):
                images = [imaging.load_image(p)[None] for p in paths[start : start + 32]]  # [1,1,H,W] each
                if size is not None:
                    images = [imaging.resize(im, size) for im in images]
                images = [imaging.resize(im, self.features.input_size) for im in images]
                feats.append(self.features(torch.cat(images)))  # [b, D]
            self._references[size] = FrechetReference(torch.cat(feats))
            log.info("FID reference: %d real test images at %s", len(paths), size or "their own size")
        return self._references[size]

    # -- figures -----------------------------------------------------------------------------------
    def metrics(self, scored: Scored, with_fid: bool = True) -> dict[str, Estimate]:
        return metrics(scored, self.cfg, self.reference(scored.size) if with_fid else None)

    def paired(
        self, policies: Sequence[Scored], anchor: Scored, with_fid: bool = True
    ) -> dict[str, Estimate]:
        return paired_difference(
            policies, anchor, self.cfg, self.reference(anchor.size) if with_fid else None
        )

    def compare(self, policy: Scored, anchor: Scored | None = None) -> dict[str, Any]:
        """The figures of ``eval.json``: both sides' metrics and the paired differences with intervals."""
        anchor = anchor or self.anchor()
        out: dict[str, Any] = {}
        for side, scored in (("anchor", anchor), ("cxrl", policy)):
            values = {k: _num(e.value) for k, e in self.metrics(scored).items()}
            out[side] = values | {"n_prompts": scored.n_prompts, "n_images": len(scored.image_prompt)}
        out["diff"] = {k: e.to_dict() for k, e in self.paired([policy], anchor).items()}
        out["n_prompts"] = len(self.prompts)
        out["samples_per_report"] = self.cfg.samples_per_report
        out["weights"] = self.weights
        return out

    def evaluate(self) -> dict[str, Any]:
        """The evaluator's policy against the anchor (the trainer's end-of-run evaluation)."""
        return self.compare(self.sampled("cxrl"))


def _num(v: float) -> float | None:
    return None if v != v else v  # NaN (e.g. an AUROC with no scorable label) -> null in JSON
