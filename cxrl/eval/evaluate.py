"""Evaluate generators on held-out test reports: the CXRL paper's Table 1 and Table 2a.

For every generator: produce ``K`` images for each of ``N`` test reports (or read them),
then, per image, the posture reward ``r_align``, the diagnostic classifier's calibrated
outputs, the CXR-CLIP image-report cosine and the xrv DenseNet ``features2``; per
prompt, the mean pairwise MS-SSIM of its images. Metrics (Han et al., MICCAI 2024, Sec. 3.1):

- ``r_align``: mean over prompts of the prompt's mean r_align;
- ``auroc``: mean per-label AUROC of the classifier on all images against the labels the
  report labeler reads from their prompts (:mod:`cxrl.eval.auroc`);
- ``clip``: mean over prompts of the mean CXR-CLIP cosine;
- ``fid``: Fréchet distance of all generated images' features to the real test images of
  the selected prompts, brought to the generated images' resolution first (:mod:`cxrl.eval.fid`);
- ``msssim``: mean over prompts of the mean pairwise MS-SSIM (needs K >= 2).

Intervals: percentile bootstrap over prompts (a prompt keeps all its images), one seeded
resampling shared by all metrics of a row; the FID reference set stays fixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from tqdm import tqdm

from cxrl import imaging
from cxrl.config import ConfigModel
from cxrl.eval import auroc, msssim
from cxrl.eval.bootstrap import Estimate, bootstrap_ci, mean_ci
from cxrl.eval.fid import FrechetReference, XrvFeatureExtractor
from cxrl.eval.generators import Prompt, Sampling, Source
from cxrl.eval.imagedir import Group, ImageDirWriter
from cxrl.eval.tables import Row

log = logging.getLogger(__name__)


class EvalConfig(ConfigModel):
    """What `cxrl evaluate` measures and how."""

    prompts: int = Field(100, ge=2, description="N held-out test reports (the paper uses 1,000)")
    samples_per_prompt: int = Field(4, ge=1, description="K images per report; MS-SSIM needs K >= 2")
    seed: int = Field(0, description="seed of the prompt selection, the sampling noise and the bootstrap")
    num_steps: int = Field(50, ge=1, description="DDIM steps of model generators")
    guidance_scale: float = Field(5.0, ge=1.0, description="classifier-free guidance scale")
    eta: float = Field(1.0, ge=0.0, description="DDIM eta (1 = the stochastic sampler CXRL trains with)")
    batch_size: int = Field(8, ge=1, description="images per generator forward pass")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples over prompts (0 = no intervals)")
    confidence: float = Field(0.95, gt=0, lt=1, description="bootstrap interval coverage")
    uncertain: Literal["exclude", "positive", "negative"] = Field(
        "exclude", description="AUROC targets: how uncertain (-1) report labels count"
    )
    absent: Literal["negative", "exclude"] = Field(
        "negative", description="AUROC targets: how labels a report does not mention count"
    )
    device: str = Field("cpu", description="torch device for generators and scorers")

    def sampling(self) -> Sampling:
        return Sampling(self.num_steps, self.guidance_scale, self.eta, self.batch_size, self.seed)


def select_prompts(data_dir: str | Path, n: int, seed: int = 0) -> list[Prompt]:
    """``n`` test-split reports (within the M-token limit), chosen by ``seed``, with their images."""
    from cxrl.reports.sections import within_limit
    from cxrl.world.dataset import load_records

    records = [r for r in load_records(data_dir, split="test") if within_limit(r.report)]
    if len(records) < 2:
        raise ValueError(f"{data_dir} has {len(records)} usable test reports; need at least 2")
    if n > len(records):
        log.warning(
            "asked for %d prompts but %s has %d usable test reports; using all", n, data_dir, len(records)
        )
        n = len(records)
    order = np.random.default_rng(seed).permutation(len(records))[:n]
    return [Prompt(records[i].id, records[i].report, Path(records[i].image_path)) for i in order]


@dataclass
class Scores:
    """Everything measured for one generator, per image (M) and per prompt (N)."""

    prompt_ids: list[str]  # [N]
    reports: list[str]  # [N]
    image_prompt: np.ndarray  # [M] index of each image's prompt
    r_align: np.ndarray  # [M]
    clip: np.ndarray  # [M]
    probs: np.ndarray  # [M, 18] calibrated classifier outputs
    features: np.ndarray  # [M, D]
    msssim: np.ndarray  # [N] mean pairwise MS-SSIM (NaN when a prompt has one image)
    image_size: tuple[int, int] | None  # (H, W) shared by all images, None when sizes differ

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)


class Evaluator:
    """Scores image groups with the reward models and turns the scores into table rows."""

    def __init__(
        self,
        cfg: EvalConfig,
        scorers: tuple,
        prompts: Sequence[Prompt],
        features: XrvFeatureExtractor | None = None,
    ):
        """``scorers`` = (posture, diagnostic, consistency); FID features default to the diagnostic DenseNet."""
        self.cfg = cfg
        self.posture, self.diagnostic, self.consistency = scorers
        self.features = features or XrvFeatureExtractor(self.diagnostic.model, self.diagnostic.input_size)
        self.prompts = list(prompts)
        self._references: dict[tuple[int, int] | None, FrechetReference] = {}

    # -- the FID reference -------------------------------------------------------------------------
    def reference(self, size: tuple[int, int] | None = None) -> FrechetReference:
        """Features of the real test images of the prompts, first resized to ``size`` (cached per size).

        ``size`` is the generated images' (H, W): real and generated images then reach the
        classifier through the same resampling, so FID measures content, not a resolution gap.
        """
        if size not in self._references:
            paths = [p.image_path for p in self.prompts if p.image_path is not None]
            if len(paths) < 2:
                raise ValueError("FID needs the real test images of at least 2 prompts; give --data")
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

    # -- scoring -----------------------------------------------------------------------------------
    def score(self, source: Source, save_dir: str | Path | None = None) -> Scores:
        k = self.cfg.samples_per_prompt
        writer = ImageDirWriter(save_dir) if save_dir is not None else None
        ids, reports, image_prompt, r_al, clip, probs, feats, ms = [], [], [], [], [], [], [], []
        sizes: set[tuple[int, int]] = set()
        total = source.count(self.prompts) if hasattr(source, "count") else len(self.prompts)
        groups = tqdm(source.groups(self.prompts, k), total=total, desc=source.name, unit="prompt")
        for group in groups:
            self._check(group)
            n = group.images.shape[0]
            sizes.add((group.images.shape[-2], group.images.shape[-1]))
            texts = [group.report] * n
            image_prompt += [len(ids)] * n
            ids.append(group.prompt_id)
            reports.append(group.report)
            r_al.append(self.posture(group.images).r_align.numpy())
            clip.append(self.consistency(group.images, texts).consistency.numpy())
            probs.append(self.diagnostic(group.images, texts).diag_probs.numpy())
            feats.append(self.features(group.images).numpy())
            ms.append(msssim.pairwise_msssim(group.images) if n >= 2 else float("nan"))
            if writer is not None:
                writer.add(group)
        if writer is not None:
            writer.close()
        if len(ids) < 2:
            raise ValueError(f"{source.name}: got images for {len(ids)} prompt(s); need at least 2")
        if len(sizes) > 1:
            log.warning(
                "%s: images come in %d sizes; FID compares with real images at their own size",
                source.name,
                len(sizes),
            )
        return Scores(
            ids, reports, np.array(image_prompt), np.concatenate(r_al), np.concatenate(clip),
            np.concatenate(probs), np.concatenate(feats), np.array(ms, dtype=np.float64),
            sizes.pop() if len(sizes) == 1 else None,
        )  # fmt: skip

    @staticmethod
    def _check(group: Group) -> None:
        imaging.validate(group.images, f"images of prompt {group.prompt_id!r}")
        if not group.report.strip():
            raise ValueError(f"prompt {group.prompt_id!r} has an empty report")

    # -- metrics -----------------------------------------------------------------------------------
    def targets(self, scores: Scores) -> np.ndarray:
        """AUROC targets of every image ``[M,18]``: its prompt's labels (1/0, NaN = excluded)."""
        return auroc.report_targets(scores.reports, self.cfg.uncertain, self.cfg.absent)[scores.image_prompt]

    def metrics(self, scores: Scores, with_fid: bool = True) -> dict[str, Estimate]:
        cfg = self.cfg
        n = scores.n_prompts
        rows_of = [np.flatnonzero(scores.image_prompt == i) for i in range(n)]  # prompt -> image rows
        targets = self.targets(scores)

        def rows(idx: np.ndarray) -> np.ndarray:
            return np.concatenate([rows_of[i] for i in idx])

        def boot(stat) -> Estimate:
            return bootstrap_ci(stat, n, cfg.bootstrap, cfg.confidence, cfg.seed)

        def per_prompt(values: np.ndarray) -> np.ndarray:
            return np.array([values[r].mean() for r in rows_of])

        out = {
            "r_align": mean_ci(per_prompt(scores.r_align), cfg.bootstrap, cfg.confidence, cfg.seed),
            "clip": mean_ci(per_prompt(scores.clip), cfg.bootstrap, cfg.confidence, cfg.seed),
            "auroc": boot(lambda idx: auroc.mean_auroc(scores.probs[rows(idx)], targets[rows(idx)]).mean),
        }
        if np.isfinite(scores.msssim).any():
            ms = scores.msssim
            out["msssim"] = boot(
                lambda idx: float(np.nanmean(ms[idx])) if np.isfinite(ms[idx]).any() else np.nan
            )
        if with_fid:
            ref = self.reference(scores.image_size)
            out["fid"] = boot(lambda idx: ref.distance(scores.features[rows(idx)]))
        return out

    def evaluate(self, source: Source, save_dir: str | Path | None = None, with_fid: bool = True) -> Row:
        """Generate (or read), score and summarise one generator -> a table Row."""
        t0, c0 = time.perf_counter(), time.process_time()
        scores = self.score(source, save_dir)
        t1 = time.perf_counter()
        metrics = self.metrics(scores, with_fid=with_fid)
        per_label = auroc.mean_auroc(scores.probs, self.targets(scores)).per_label
        info = {
            "prompts": scores.n_prompts,
            "images": int(len(scores.image_prompt)),
            "auroc_labels": int(sum(np.isfinite(v) for v in per_label.values())),
            "auroc_per_label": {k: round(v, 4) for k, v in per_label.items() if np.isfinite(v)},
            "generate_and_score_s": round(t1 - t0, 2),
            "metrics_s": round(time.perf_counter() - t1, 2),
            "eval_cpu_s": round(time.process_time() - c0, 2),  # all threads of this process
        }
        log.info("%s: %s", source.name, {k: round(v.value, 4) for k, v in metrics.items()})
        return Row(source.name, metrics, info)
