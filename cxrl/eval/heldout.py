"""The held-out set of an evaluation: which test reports, which noise seeds, how many images each.

One prompt selection and one seed scheme serve every evaluation (the trainer's end-of-run
evaluation, `cxrl evaluate`, `cxrl reproduce`), so the same settings give the same (report, seed)
pairs wherever they are evaluated:

- reports: the test split of the run's data (a default world or a MIMIC-CXR-JPG selection, with
  their real images) or, without data, the IU impressions of the torchxrayvision wheel split as
  the default world splits them (no real images: no FID); de-duplicated, within the generator's
  token limit, ``prompts`` of them chosen by ``seed``, a share ``with_findings`` among those the
  report labeler finds findings in (so AUROC has positives for more labels);
- seeds: image ``j`` of a report has the noise seed :func:`held_out_seed` ``(seed, report, j)``,
  a function of the report's text only, so a report keeps its images whatever else is selected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from cxrl.config import ConfigModel

log = logging.getLogger(__name__)


FidFeatures = Literal["auto", "off"]  # where FID's feature model comes from: HeldOutConfig.fid_features


class HeldOutConfig(ConfigModel):
    """What a held-out evaluation measures and how (the trainer's ``eval:`` section extends it)."""

    prompts: int = Field(48, ge=2, description="held-out test reports evaluated (the paper uses 1,000)")
    with_findings: float = Field(
        0.5, ge=0, le=1, description="share of held-out reports chosen among those with findings (for AUROC)"
    )
    samples_per_report: int = Field(
        1, ge=1, description="K images per report (fixed seeds); MS-SSIM needs K >= 2"
    )
    seed: int = Field(1234, description="seed of the report choice, their noise seeds and the bootstrap")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples over reports (0 = no intervals)")
    confidence: float = Field(0.95, gt=0, lt=1, description="bootstrap interval coverage")
    uncertain: Literal["exclude", "positive", "negative"] = Field(
        "exclude", description="AUROC targets: how uncertain (-1) report labels count"
    )
    absent: Literal["negative", "exclude"] = Field(
        "negative", description="AUROC targets: how labels a report does not mention count"
    )
    fid_features: FidFeatures = Field(
        "auto",
        description="FID's feature model, the diagnostic xrv DenseNet's features2 (its real-image reference "
        "statistics come from the same model): 'auto' = the in-process reward backend's diagnostic model, or, "
        "when rewards come from a service (gRPC), the diagnostic model of the reward model settings (the "
        "trainer's rewards.models) loaded in this process; 'off' = no FID",
    )


@dataclass(frozen=True)
class Prompt:
    """A held-out test report (and its real image, for FID and the ``real`` row)."""

    id: str
    report: str
    image_path: Path | None = None


def held_out_seed(seed: int, report: str, sample: int = 0) -> int:
    """The fixed noise seed of a held-out report's ``sample``-th image."""
    key = f"eval\0{seed}\0{report}" + (f"\0{sample}" if sample else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def split_reports(data: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(train reports, test reports) of a dataset directory or the IU split, de-duplicated in order."""
    if data is not None:
        from cxrl.world.dataset import load_records

        train = [r.report for r in load_records(data, "train")]
        test = [r.report for r in load_records(data, "test")]
    else:
        from cxrl.world.build import WorldConfig
        from cxrl.world.corpus import load_iu_reports
        from cxrl.world.sampling import split_reports as split_ids

        world = WorldConfig()
        reports = load_iu_reports()
        idx = split_ids([r.report_id for r in reports], world.n_train, world.n_test, world.seed)
        train = [reports[i].impression for i in idx["train"]]
        test = [reports[i].impression for i in idx["test"]]
    train, test = list(dict.fromkeys(train)), list(dict.fromkeys(test))
    overlap = set(train) & set(test)
    if overlap:  # the same impression text under two report ids: keep it out of training
        train = [r for r in train if r not in overlap]
    if not train or not test:
        raise ValueError(f"need train and test reports, got {len(train)} and {len(test)} (data={data})")
    return train, test


def prompts_of(reports: Sequence[str], data: str | Path | None = None, split: str = "test") -> list[Prompt]:
    """Prompts of ``reports``, each with the image of the first ``split`` record of ``data`` that has its
    text (the real image FID compares with; none without ``data``)."""
    images: dict[str, tuple[str, Path]] = {}
    if data is not None:
        from cxrl.world.dataset import load_records

        for r in load_records(data, split):
            images.setdefault(r.report, (r.id, Path(r.image_path)))
    out = []
    for i, report in enumerate(reports):
        rid, path = images.get(report, (f"{split}-{i}", None))
        out.append(Prompt(rid, report, path))
    return out


def select(prompts: Sequence[Prompt], n: int, with_findings: float, seed: int) -> list[Prompt]:
    """``n`` prompts chosen by ``seed``: a share ``with_findings`` among those with findings, then normal."""
    from cxrl.reports.labeler import label_report
    from cxrl.world.sampling import findings_of

    positive = [p for p in prompts if findings_of(label_report(p.report))]
    pos = {p.report for p in positive}
    normal = [p for p in prompts if p.report not in pos]
    k = min(len(positive), int(round(n * with_findings)))
    rng = np.random.default_rng([seed, 7])
    chosen = [positive[i] for i in rng.choice(len(positive), size=k, replace=False)] if k else []
    rest = min(len(normal), n - k)
    chosen += [normal[i] for i in rng.choice(len(normal), size=rest, replace=False)] if rest else []
    if len(chosen) < n:
        log.warning("only %d held-out reports available (asked for %d)", len(chosen), n)
    if len(chosen) < 2:
        raise ValueError(f"need at least 2 held-out reports, got {len(chosen)}")
    return chosen


def held_out(test: Sequence[str], cfg: HeldOutConfig, data: str | Path | None = None) -> list[Prompt]:
    """The held-out prompts of a run from its test reports (those that fit the generator), as ``cfg`` says."""
    return select(prompts_of(test, data), cfg.prompts, cfg.with_findings, cfg.seed)
