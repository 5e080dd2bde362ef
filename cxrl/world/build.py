"""`cxrl world build`: render the default world (images, metadata.csv, sampling.json, canonical.png).

Layout of a world directory::

    images/<id>.png     8-bit greyscale radiographs, size x size
    metadata.csv        one row per image (columns: ``METADATA_COLUMNS``)
    sampling.json       how reports were split and sampled (cxrl.world.sampling) and label counts
    canonical.png       the canonical CXR (CXRL paper, Sec. 2.3): mean of 500 random training
                        images, each as rendered in the canonical frame (before posing and the
                        detector). The mean of the posed images would sit off the frame that
                        the recorded psi refers to (a vertical scale bias of about +0.025), so
                        posture learnt by aligning to it could not match the world's psi.

Every random choice comes from ``numpy.random.default_rng([seed, ...])`` streams keyed
by what they decide (split, plan, image index), so the same seed gives the same bytes
whatever the number of worker processes. The directory is written under a temporary
name next to ``out`` and renamed at the end.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cxrl.imaging import save_image
from cxrl.labels import LABELS, UNCERTAIN, column_name
from cxrl.reports.labeler import label_findings
from cxrl.world.corpus import load_iu_reports
from cxrl.world.posture import PSI_NAMES, PostureRanges
from cxrl.world.records import SPLITS
from cxrl.world.render import Draw, Renderer, side_of
from cxrl.world.sampling import OVERSAMPLE, plan_split, split_reports

log = logging.getLogger(__name__)

CANONICAL_N = 500
METADATA_COLUMNS: tuple[str, ...] = (
    ("id", "split", "image", "report", "view", "report_id", "repeat")
    + tuple(column_name(label) for label in LABELS)
    + PSI_NAMES
    + ("mask", "rendered", "devices")
)


@dataclass(frozen=True)
class WorldConfig:
    """What to build."""

    n_train: int = 5000  # training images
    n_test: int = 1000  # test images
    size: int = 256  # image side in pixels
    seed: int = 0  # the world seed: same seed, same bytes
    workers: int = 2  # rendering processes


@dataclass(frozen=True)
class Job:
    """One image to render: everything the worker needs, decided by the parent."""

    index: int  # global image index
    split: str
    image_id: str
    report: str
    report_id: str
    repeat: int
    findings: tuple[tuple[str, int, str], ...]  # (label, value, laterality) of every mentioned label


_RENDERER: Renderer | None = None  # one per process: workers inherit the parent's mask set through fork


def _init_worker(renderer: Renderer) -> None:
    global _RENDERER
    torch.set_num_threads(1)
    _RENDERER = renderer


def plan_draws(
    job: Job, seed: int, n_masks: int
) -> tuple[np.random.Generator, int, tuple[float, ...], list[Draw]]:
    """Decide mask, posture and what to draw for one image (uncertain findings: drawn at half strength w.p. 0.5)."""
    rng = np.random.default_rng([seed, 3, job.index])
    mask_index = int(rng.integers(n_masks))
    psi = PostureRanges().sample(rng)
    draws = []
    for label, value, laterality in job.findings:
        if value == 0 or label not in LABELS or label == "No Finding":
            continue
        strength = 1.0
        if value == UNCERTAIN:
            if rng.random() >= 0.5:
                continue
            strength = 0.5
        draws.append(Draw(label, side_of(laterality, label, rng), strength))
    return rng, mask_index, psi, draws


def render_job(
    job: Job, seed: int, images_dir: Path, keep_canonical: bool = False
) -> tuple[dict[str, str], np.ndarray | None]:
    """Render one image, write its PNG; return its metadata row and, if asked, its unposed render."""
    renderer = _RENDERER
    if renderer is None:
        raise RuntimeError("render_job called before _init_worker set up this process's renderer")
    rng, mask_index, psi, draws = plan_draws(job, seed, renderer.n_masks)
    out = renderer.render(mask_index, draws, psi, rng)
    rel = f"images/{job.image_id}.png"
    save_image(torch.from_numpy(out.image)[None], images_dir.parent / rel)
    labels = {label: value for label, value, _ in job.findings}
    row = {
        "id": job.image_id,
        "split": job.split,
        "image": rel,
        "report": job.report,
        "view": "PA",
        "report_id": job.report_id,
        "repeat": str(job.repeat),
    }
    for label in LABELS:
        row[column_name(label)] = str(labels[label]) if label in labels else ""
    row.update({name: f"{v:.6f}" for name, v in zip(PSI_NAMES, psi, strict=True)})
    row["mask"] = renderer.masks.names[mask_index]
    row["rendered"] = "|".join(f"{d.label}:{d.side:+d}:{d.strength:g}" for d in draws)
    row["devices"] = "|".join(out.devices)
    return row, (out.canonical if keep_canonical else None)


def _render_one(args: tuple[Job, int, Path, bool]) -> tuple[dict[str, str], np.ndarray | None]:
    return render_job(*args)


def make_jobs(cfg: WorldConfig) -> tuple[list[Job], dict]:
    """Corpus -> labels -> split -> plan -> jobs, plus the sampling record."""
    reports = load_iu_reports()
    findings = [label_findings(r.impression) for r in reports]
    labels = [{k: f.value for k, f in fs.items()} for fs in findings]
    splits = split_reports([r.report_id for r in reports], cfg.n_train, cfg.n_test, cfg.seed)
    jobs: list[Job] = []
    sampling = {
        "seed": cfg.seed,
        "rule": (
            "reports split by report id (seeded shuffle, test share n_test/(n_train+n_test)); per split "
            f"ceil({1 - OVERSAMPLE:.2f} n) distinct reports, the remaining {OVERSAMPLE:.2f} n drawn with "
            "replacement from reports with a positive/uncertain finding, probability proportional to "
            "1/count(rarest such finding); uncertain findings drawn at half strength with probability 0.5"
        ),
        "corpus_reports": len(reports),
        "splits": {},
    }
    for code, (split, n) in enumerate(zip(SPLITS, (cfg.n_train, cfg.n_test), strict=True)):
        draws, summary = plan_split(splits[split], labels, n, cfg.seed, code)
        sampling["splits"][split] = summary
        for k, d in enumerate(draws):
            r = reports[d.report]
            fs = tuple((lab, f.value, f.laterality) for lab, f in findings[d.report].items())
            jobs.append(Job(len(jobs), split, f"{split}-{k:05d}", r.impression, r.report_id, d.repeat, fs))
    return jobs, sampling


def label_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {label: {"positive": n, "uncertain": n, "rendered": n}}}."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for split in SPLITS:
        part = [r for r in rows if r["split"] == split]
        out[split] = {}
        for label in LABELS:
            col = column_name(label)
            rendered = sum(any(x.startswith(f"{label}:") for x in r["rendered"].split("|")) for r in part)
            out[split][label] = {
                "positive": sum(r[col] == "1" for r in part),
                "uncertain": sum(r[col] == "-1" for r in part),
                "rendered": rendered,
            }
    return out


def canonical_pick(jobs: list[Job], seed: int, n: int = CANONICAL_N) -> set[int]:
    """Indices (``Job.index``) of the ``n`` random training images whose mean is the canonical CXR."""
    train = [j for j in jobs if j.split == "train"] or jobs
    pick = np.random.default_rng([seed, 4]).choice(len(train), size=min(n, len(train)), replace=False)
    return {train[i].index for i in pick.tolist()}


def mean_image(images: list[np.ndarray]) -> torch.Tensor:
    """Mean of float ``[H, W]`` images (float64 sum) -> float ``[1, H, W]`` in [0, 1]."""
    acc = np.zeros_like(images[0], dtype=np.float64)
    for img in images:
        acc += img
    return torch.from_numpy(acc / len(images)).float()[None].clamp(0, 1)


def build_world(out: Path, cfg: WorldConfig, force: bool = False, progress: bool = True) -> dict:
    """Build a world directory at ``out``. Returns a summary (timings, counts)."""
    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"{out} already exists; pass --force to replace it or choose another --out")
    if cfg.size < 32:
        raise ValueError(f"--size {cfg.size} is too small; use at least 32")
    if cfg.n_train < 0 or cfg.n_test < 0 or cfg.n_train + cfg.n_test == 0:
        raise ValueError(f"need a positive number of images, got --train {cfg.n_train} --test {cfg.n_test}")
    t0 = time.time()
    renderer = Renderer(cfg.size)
    jobs, sampling = make_jobs(cfg)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    t1 = time.time()
    pick = canonical_pick(jobs, cfg.seed)
    args = [(job, cfg.seed, tmp / "images", job.index in pick) for job in jobs]
    unposed: list[np.ndarray] = []
    bar = tqdm(total=len(jobs), desc="rendering", unit="img", disable=not progress)
    if cfg.workers > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(renderer,)) as pool:
            rows = []
            for row, canon in pool.imap(_render_one, args, chunksize=16):
                rows.append(row)
                if canon is not None:
                    unposed.append(canon)
                bar.update()
    else:
        _init_worker(renderer)
        rows = []
        for a in args:
            row, canon = _render_one(a)
            rows.append(row)
            if canon is not None:
                unposed.append(canon)
            bar.update()
    bar.close()
    t2 = time.time()
    write_metadata(tmp / "metadata.csv", rows)
    save_image(mean_image(unposed), tmp / "canonical.png")
    sampling["label_counts"] = label_counts(rows)
    sampling["masks"] = {"usable": renderer.n_masks, "rejected": renderer.masks.rejected}
    with open(tmp / "sampling.json", "w") as fh:
        json.dump(sampling, fh, indent=1, sort_keys=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    summary = {
        "images": len(rows),
        "render_seconds": t2 - t1,
        "total_seconds": time.time() - t0,
        "images_per_second": len(rows) / max(t2 - t1, 1e-9),
    }
    log.info(
        "world at %s: %d images in %.1f s (%.1f img/s rendering)",
        out,
        len(rows),
        summary["total_seconds"],
        summary["images_per_second"],
    )
    return summary


def write_metadata(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(METADATA_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
