"""`cxrl reproduce`: the CXRL paper's comparison and ablations, over training seeds (Tables 1, 2a, 2b).

For each training seed, starting from the same anchor (the frozen base generator):

- ``CXRL``: all three rewards with comparative feedback (RLCF) and ACE (Han et al., MICCAI 2024);
- ``w/o ACE``: LoRA only; ``w/o RLCF (direct feedback)``: rewards without the anchor terms;
- ``+ r_align``, ``+ r_diag``, ``+ r_consist``: each reward alone (Table 2b, Exp. 1-3; Exp. 4 is CXRL).

Table 1 also gets a row the paper does not have: the real test images of the prompts, scored by
the same models (the ceiling of r_align, AUROC and CXR-CLIP similarity in this world).

Each variant is trained with the one epoch engine (:class:`cxrl.rl.engine.Engine`, fresh noise each
epoch, in-process rewards) and evaluated with the one held-out evaluation
(:class:`cxrl.eval.evaluate.Evaluator`): every variant and seed on the same held-out (report, seed)
pairs as the anchor, which is sampled once, with the training preset's sampler and the paper's
reward weights for the combined reward (so ablations trained on one reward are compared on the
full one). Each row shows its metrics (mean ± sd over training seeds) and its paired difference to
the anchor (mean over seeds, bootstrap interval over reports, sd over seeds), recomputed from the
``scores.npz`` each evaluation leaves in ``runs/<slug>-seed<s>/`` (with ``eval.json``); a re-run
skips finished ones and resumes interrupted training from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from cxrl import imaging
from cxrl.config import ConfigModel, Overrides, as_overrides, dotted
from cxrl.eval.bootstrap import Estimate, over_seeds
from cxrl.eval.evaluate import Evaluator
from cxrl.eval.generators import load_anchor, policy_from_config
from cxrl.eval.heldout import HeldOutConfig, Prompt
from cxrl.eval.scores import Scored
from cxrl.eval.separation import markdown as separation_markdown
from cxrl.eval.separation import training_curve
from cxrl.eval.tables import AblationRow, Row, tables_json, write_tables
from cxrl.infra.fileio import atomic_write_text
from cxrl.rewards.types import PAPER_WEIGHTS
from cxrl.rl.config import PRESET_KINDS

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
ANCHOR = "anchor"
REAL = "real"  # the real test images of the prompts: the ceiling of Table 1 in this world
REAL_LABEL = "Real test images"


@dataclass(frozen=True)
class Variant:
    slug: str  # run directory name
    label: str  # row name in the tables
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted CXRLConfig overrides


VARIANTS: tuple[Variant, ...] = (
    Variant("cxrl", "CXRL"),
    Variant("no-ace", "w/o ACE", {"ace.enabled": False}),
    Variant("no-rlcf", "w/o RLCF (direct feedback)", {"rewards.rlcf": False}),
    Variant("align", "+ r_align", {"rewards.weights": {"align": 1.0}}),
    Variant("diag", "+ r_diag", {"rewards.weights": {"diag": 10.0}}),
    Variant("consist", "+ r_consist", {"rewards.weights": {"consist": 10.0}}),
)
TABLE1_ROWS = (ANCHOR, "cxrl", "no-ace", "no-rlcf", REAL)
TABLE2B = (
    ("-", "Anchor Model", ANCHOR),
    ("1", "+ r_align", "align"),
    ("2", "+ r_diag", "diag"),
    ("3", "+ r_consist", "consist"),
    ("4", "r_align + r_diag + r_consist", "cxrl"),
)


class ReproduceConfig(ConfigModel):
    """A reproduction: which RL preset, which data, which seeds and variants, how to evaluate.
    ``ReproduceConfig.load("cpu-small", ["seeds=[0]"])``: a preset of ``cxrl/eval/presets`` or a
    YAML path, with ``--set``-style dotted overrides."""

    config_dir: ClassVar[Path] = PRESET_DIR
    config_kind: ClassVar[str] = "reproduce preset"
    config_note: ClassVar[str] = PRESET_KINDS

    train_preset: str = Field("cpu-small", description="RL preset name (cxrl/rl/presets) or YAML path")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the RL preset by dotted key (as --set takes them: sampling.num_steps: 4)",
    )
    data: str = Field(
        "data/world", description="dataset directory: train reports train, test reports evaluate"
    )
    seeds: list[int] = Field([0, 1], min_length=1, description="one training run and evaluation per seed")
    variants: list[str] | None = Field(None, description="variant slugs to run (None = all)")
    eval: HeldOutConfig = Field(
        default_factory=HeldOutConfig,
        description="held-out evaluation (sampled with the training preset's sampler)",
    )
    rewards: str | None = Field(None, description="RewardModelsConfig YAML; None = the default-world models")
    device: str = Field("cpu", description="torch device for training and evaluation")
    jobs: int = Field(
        1,
        ge=1,
        description="(variant, seed) runs trained and evaluated at once, each in its own process (on a "
        "CPU: one per core, with threads_per_job torch threads each)",
    )
    threads_per_job: int = Field(1, ge=1, description="torch threads of each job's process when jobs > 1")

    @field_validator("train")
    @classmethod
    def _dotted(cls, train: dict[str, Any]) -> dict[str, Any]:
        """A nested block (``sampling: {num_steps: 4}``, or ``--set train.sampling.num_steps=4``)
        sets its fields of the preset, as the dotted keys do, instead of replacing the whole block."""
        from cxrl.rl.config import CXRLConfig

        return dotted(CXRLConfig, train)

    def chosen(self) -> list[Variant]:
        slugs = [v.slug for v in VARIANTS]
        unknown = sorted(set(self.variants or []) - set(slugs))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {slugs}")
        return [v for v in VARIANTS if self.variants is None or v.slug in self.variants]


PRESETS: tuple[str, ...] = tuple(ReproduceConfig.names())


class Reproduction:
    """Runs the variants of a :class:`ReproduceConfig` into ``out``."""

    def __init__(self, cfg: ReproduceConfig, out: str | Path, scorers: tuple):
        self.cfg, self.out, self.scorers = cfg, Path(out), scorers
        self._metrics: dict[int, dict[str, Estimate]] = {}  # id(Scored) -> its metrics (bootstraps cost)
        self._from_jobs: dict[str, dict[str, Estimate]] = {}  # run dir -> the metrics its job computed

    def metrics(self, ev: Evaluator, scored: Scored) -> dict[str, Estimate]:
        """A row's metrics (the real images without FID: they are the reference), computed once."""
        if id(scored) not in self._metrics:
            self._metrics[id(scored)] = ev.metrics(scored, with_fid=scored.name != REAL_LABEL)
        return self._metrics[id(scored)]

    def evaluator(self, prompts: Sequence[Prompt]) -> Evaluator:
        """The one evaluation of every row: the paper's weights, the preset's sampler, all three reward models."""
        from cxrl.eval.evaluate import feature_model
        from cxrl.rewards.backend import InProcessRewards

        backend = InProcessRewards(*self.scorers, weights=dict(PAPER_WEIGHTS))
        sampling = self._rl_config(VARIANTS[0], self.cfg.seeds[0]).sampling
        return Evaluator(
            self.cfg.eval, prompts, sampling, backend, dict(PAPER_WEIGHTS), features=feature_model(backend)
        )

    def run(self, train_prompts: Sequence[str], prompts: Sequence[Prompt]) -> str:
        """Train and evaluate every (variant, seed); write ``tables.md``/``tables.json``; return the markdown."""
        ev = self.evaluator(prompts)
        anchor = self._cached(self.out / "runs" / ANCHOR, "Anchor", None, ev, None, lambda: self._anchor(ev))
        scored: dict[str, list[Scored]] = {ANCHOR: [anchor]}
        info: dict[str, list[dict[str, Any]]] = {ANCHOR: [_info(self.out / "runs" / ANCHOR)]}
        if all(p.image_path is not None for p in prompts):
            real = self._cached(
                self.out / "runs" / REAL, REAL_LABEL, None, ev, anchor, lambda: self._real(ev)
            )
            scored[REAL], info[REAL] = [real], [_info(self.out / "runs" / REAL)]
        if self.cfg.jobs > 1:
            self._run_parallel(ev, train_prompts, prompts)
        for seed in self.cfg.seeds:
            for variant in self.cfg.chosen():
                run_dir = self.run_dir(variant.slug, seed)
                result = self.run_one(variant, seed, train_prompts, ev, anchor)
                if str(run_dir) in self._from_jobs:  # the job computed them from these scores already
                    self._metrics[id(result)] = self._from_jobs[str(run_dir)]
                scored.setdefault(variant.slug, []).append(result)
                info.setdefault(variant.slug, []).append(_info(run_dir))
        return self._tables(ev, scored, info)

    def run_dir(self, slug: str, seed: int) -> Path:
        """Where one (variant, seed) run keeps its checkpoints, ``eval.json`` and ``scores.npz``."""
        return self.out / "runs" / f"{slug}-seed{seed}"

    def pending(self, ev: Evaluator) -> list[tuple[Variant, int]]:
        """The (variant, seed) runs without a stored result made with the current settings."""
        todo = []
        for seed in self.cfg.seeds:
            for variant in self.cfg.chosen():
                if not self._stored(self.run_dir(variant.slug, seed), self._key((variant, seed), ev)):
                    todo.append((variant, seed))
        return todo

    def run_one(
        self, variant: Variant, seed: int, train_prompts: Sequence[str], ev: Evaluator, anchor: Scored
    ) -> Scored:
        """Train and evaluate one (variant, seed) into :meth:`run_dir` (or reuse it)."""
        run_dir = self.run_dir(variant.slug, seed)
        return self._cached(
            run_dir,
            variant.label,
            (variant, seed),
            ev,
            anchor,
            lambda: self._train(variant, seed, run_dir, train_prompts, ev),
        )

    def _run_parallel(self, ev: Evaluator, train_prompts: Sequence[str], prompts: Sequence[Prompt]) -> None:
        """The pending runs in ``jobs`` worker processes; their results land in ``runs/`` like serial ones.

        Runs that sample the anchor go first (they take longest), so the pool's tail is short, variant
        by variant over the seeds, so that runs side by side sample different seeds' anchors and the
        later variants of a seed find theirs stored (:meth:`wiring`).
        A failed run fails the reproduction after the others finish (their results are kept).
        """
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        order = {v.slug: i for i, v in enumerate(VARIANTS)}
        todo = sorted(
            self.pending(ev),
            key=lambda r: (not self._rl_config(*r).rewards.needs_anchor, order[r[0].slug], r[1]),
        )
        if not todo:
            return
        jobs = min(self.cfg.jobs, len(todo))
        log.info(
            "%d runs in %d processes (%d torch thread(s) each)", len(todo), jobs, self.cfg.threads_per_job
        )
        errors = []
        with ProcessPoolExecutor(
            jobs,
            mp_context=mp.get_context("spawn"),  # no forked torch/thread state in the workers
            initializer=_init_worker,
            initargs=(self.cfg, str(self.out), self.scorers, list(train_prompts), list(prompts)),
        ) as pool:
            futures = {pool.submit(_worker_run, v.slug, s): (v, s) for v, s in todo}
            for future in as_completed(futures):
                variant, seed = futures[future]
                try:
                    run_dir, metrics = future.result()
                    self._from_jobs[run_dir] = {k: Estimate.from_dict(v) for k, v in metrics.items()}
                    log.info("finished %s-seed%d", variant.slug, seed)
                except Exception as exc:  # keep the other runs going; report them all at the end
                    log.error("%s-seed%d failed: %s: %s", variant.slug, seed, type(exc).__name__, exc)
                    errors.append(f"{variant.slug}-seed{seed}: {type(exc).__name__}: {exc}")
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(todo)} runs failed: " + "; ".join(errors))

    def _anchor(self, ev: Evaluator) -> tuple[Scored, dict[str, Any]]:
        policy = load_anchor(self._rl_config(VARIANTS[0], self.cfg.seeds[0]).generator, self.cfg.device)
        return ev.sampled("Anchor", policy, anchor=True), {}

    def _real(self, ev: Evaluator) -> tuple[Scored, dict[str, Any]]:
        groups = [(p.report, imaging.load_image(p.image_path)[None]) for p in ev.prompts]
        return ev.scored_groups(REAL_LABEL, groups), {}

    def _train(
        self, variant: Variant, seed: int, run_dir: Path, prompts: Sequence[str], ev: Evaluator
    ) -> tuple[Scored, dict[str, Any]]:
        from cxrl.rl.run import build
        from cxrl.rl.sinks import LogLine

        rl = self._rl_config(variant, seed)
        policy = policy_from_config(rl, device=self.cfg.device)
        run = build(
            rl,
            prompts,
            self._backend(rl),
            policy=policy,
            wiring=self.wiring(),
            run_dir=run_dir,
            sinks=[LogLine(rl.epochs)],
        )
        trainer = run.engine
        trainer.resume()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            trainer.run()
        finally:
            trainer.close()
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        scored = ev.sampled(variant.label, policy)
        last = trainer.history[-1] if trainer.history else {}
        return scored, {
            "train_s": round(train_s, 2),
            "train_cpu_s": round(train_cpu_s, 2),
            "epochs": trainer.epoch,
            "final_reward_mean": last.get("policy/total"),
        }

    def _key(self, run: tuple[Variant, int] | None, ev: Evaluator) -> dict[str, Any]:
        """What a stored result depends on: a change evaluates again (training resumes from its checkpoint)."""
        rl = self._rl_config(run[0] if run else VARIANTS[0], run[1] if run else self.cfg.seeds[0])
        return {
            "eval": self.cfg.eval.model_dump(mode="json"),
            "sampling": ev.sampling.model_dump(mode="json"),
            "prompts": [p.id for p in ev.prompts],
            "train": None if run is None else rl.model_dump(mode="json"),
            "generator": rl.generator,
        }

    def _rl_config(self, variant: Variant, seed: int):
        from cxrl.rl.config import CXRLConfig

        overrides = {
            **self.cfg.train,
            **variant.overrides,
            "seed": seed,
            "data": self.cfg.data,
            "device": self.cfg.device,
        }
        return CXRLConfig.load(self.cfg.train_preset, overrides)

    def _backend(self, rl):
        """Every reward model scores every run (the total uses the run's weights only), so the
        anchors a run stores hold all components and serve every variant of its seed."""
        from cxrl.rewards.backend import InProcessRewards

        return InProcessRewards(*self.scorers, weights=rl.rewards.weights)

    def wiring(self):
        """Fresh noise each epoch; anchor samples on disk under ``anchors/``: the variants of a training
        seed draw the same (report, noise seed) pairs, so the first run to sample an anchor serves all
        the others."""
        from cxrl.rl.run import Wiring

        return Wiring(plan="fresh-noise", anchors="directory", anchor_dir=str(self.out / "anchors"))

    def _cached(
        self,
        run_dir: Path,
        name: str,
        run: tuple[Variant, int] | None,
        ev: Evaluator,
        anchor: Scored | None,
        make,
    ) -> Scored:
        """The scores of ``run_dir`` if made with the same settings, else ``make()``'s, written with ``eval.json``."""
        path, npz, key = run_dir / "eval.json", run_dir / "scores.npz", self._key(run, ev)
        if self._stored(run_dir, key):
            log.info("reusing %s", npz)
            return Scored.load(npz)
        if path.is_file():
            log.info("%s was made with other settings; evaluating again", path)
        t0, c0 = time.perf_counter(), time.process_time()
        scored, info = make()
        t1 = time.perf_counter()
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_name("scores.tmp.npz")
        scored.save(tmp)
        tmp.replace(npz)
        real = name == REAL_LABEL
        diff = None if anchor is None else ev.paired([scored], anchor, with_fid=not real)
        row = Row(name, self.metrics(ev, scored), info, diff)
        row.info |= {
            "prompts": scored.n_prompts,
            "generate_and_score_s": round(t1 - t0 - info.get("train_s", 0.0), 2),
            "metrics_s": round(time.perf_counter() - t1, 2),
            "eval_cpu_s": round(time.process_time() - c0 - info.get("train_cpu_s", 0.0), 2),  # all threads
        }
        atomic_write_text(path, json.dumps(tables_json([row], meta=key), indent=1, allow_nan=False))
        return scored

    def _histories(self, slug: str) -> list[list[dict[str, Any]]]:
        """Each seed's training history of a variant."""
        return [_history(self.run_dir(slug, seed)) for seed in self.cfg.seeds]

    @staticmethod
    def _stored(run_dir: Path, key: dict[str, Any]) -> bool:
        """Whether ``run_dir`` holds scores made with the settings ``key``."""
        path = run_dir / "eval.json"
        return (
            path.is_file()
            and (run_dir / "scores.npz").is_file()
            and json.loads(path.read_text()).get("meta") == key
        )

    def _tables(self, ev: Evaluator, scored: dict[str, list[Scored]], info: dict[str, list[dict]]) -> str:
        labels = {ANCHOR: "Anchor", REAL: REAL_LABEL} | {v.slug: v.label for v in VARIANTS}
        anchor = scored[ANCHOR][0]
        rows = {}
        per_seed = {
            slug: [Row(labels[slug], self.metrics(ev, s)) for s in runs] for slug, runs in scored.items()
        }
        for slug, runs in scored.items():
            real = slug == REAL
            row = aggregate(labels[slug], per_seed[slug])
            row.diff = None if slug == ANCHOR else ev.paired(runs, anchor, with_fid=not real)
            row.info |= _summed(info[slug])
            rows[slug] = row
        main = [rows[s] for s in TABLE1_ROWS if s in rows]
        ablation = [AblationRow(exp, reward, rows[s]) for exp, reward, s in TABLE2B if s in rows]
        extra = [r for s, r in rows.items() if s not in TABLE1_ROWS]
        meta = {
            "seeds": self.cfg.seeds,
            "train_preset": self.cfg.train_preset,
            "data": self.cfg.data,
            "prompts": len(ev.prompts),
            "samples_per_report": self.cfg.eval.samples_per_report,
            "combined reward weights": dict(PAPER_WEIGHTS),
        }
        text = write_tables(main, ablation, meta)
        trained = {
            slug: (rows[slug].name, rows[slug].diff or {}) for slug in scored if slug not in (ANCHOR, REAL)
        }
        curves = {slug: training_curve(self._histories(slug)) for slug in trained}
        section, separation = separation_markdown(trained, curves, len(ev.prompts))
        text += "\n" + section
        atomic_write_text(self.out / "tables.md", text)
        data = tables_json(main + extra, ablation, meta)
        data["separation"] = separation
        for table in ("table1", "table2a"):
            data[table]["rows"] = [r.name for r in main]
        data["per_seed"] = {slug: tables_json(seed_rows)["rows"] for slug, seed_rows in per_seed.items()}
        atomic_write_text(self.out / "tables.json", json.dumps(data, indent=1, allow_nan=False))
        return text


_WORKER: dict[str, Any] = {}  # a worker process's reproduction, evaluator and anchor scores


def _init_worker(
    cfg: ReproduceConfig, out: str, scorers: tuple, train_prompts: list[str], prompts: list[Prompt]
) -> None:
    import torch

    from cxrl.log import setup_logging

    setup_logging("INFO")
    torch.set_num_threads(cfg.threads_per_job)
    reproduction = Reproduction(cfg, out, scorers)
    ev = reproduction.evaluator(prompts)
    anchor = Scored.load(Path(out) / "runs" / ANCHOR / "scores.npz")
    _WORKER.update(reproduction=reproduction, ev=ev, anchor=anchor, train_prompts=train_prompts)


def _worker_run(slug: str, seed: int) -> tuple[str, dict[str, dict]]:
    """One (variant, seed) in a worker process (see :meth:`Reproduction._run_parallel`): its run
    directory and the metrics it computed from its scores (so the tables need not bootstrap them again)."""
    w = _WORKER
    variant = next(v for v in VARIANTS if v.slug == slug)
    reproduction: Reproduction = w["reproduction"]
    scored = reproduction.run_one(variant, seed, w["train_prompts"], w["ev"], w["anchor"])
    return str(reproduction.run_dir(slug, seed)), {
        k: v.to_dict() for k, v in reproduction.metrics(w["ev"], scored).items()
    }


def _history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch metrics a run checkpointed last ([] before its first checkpoint)."""
    from cxrl.rl.checkpoint import checkpoint_history, latest_checkpoint

    latest = latest_checkpoint(run_dir / "checkpoints")
    if latest is None or not (latest / "state.json").is_file():
        return []
    return checkpoint_history(latest)


def _info(run_dir: Path) -> dict[str, Any]:
    """What a stored evaluation recorded besides its figures (times, epochs)."""
    return json.loads((run_dir / "eval.json").read_text())["rows"][0]["info"]


def _summed(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Training and evaluation times summed over seeds (what the budget was spent on)."""
    keys = ("train_s", "train_cpu_s", "generate_and_score_s", "metrics_s", "eval_cpu_s")
    return {k: round(sum(i.get(k) or 0.0 for i in infos), 2) for k in keys if any(k in i for i in infos)}


def aggregate(name: str, seed_rows: list[Row]) -> Row:
    """One row per variant: each metric's mean ± sd over seeds (metrics every seed has)."""
    keys = set.intersection(*(set(r.metrics) for r in seed_rows))
    metrics = {k: over_seeds([r.metrics[k] for r in seed_rows]) for k in sorted(keys)}
    return Row(name, metrics, {"n_seeds": len(seed_rows)})


def reproduce(
    preset: str = "cpu-small",
    out: str | Path = "out/reproduce",
    data: str | None = None,
    seeds: list[int] | None = None,
    variants: list[str] | None = None,
    rewards: str | None = None,
    device: str = "cpu",
    jobs: int | None = None,
    overrides: Overrides = None,
) -> str:
    """`cxrl reproduce`: read the dataset, build the reward models, run everything, return the markdown.

    ``overrides`` are dotted ``--set`` overrides of the preset; the keyword arguments are the
    command's shorthands for some of them (None: the preset's), applied after them."""
    from cxrl.eval.heldout import held_out, split_reports
    from cxrl.rewards.factory import scorers_from_yaml
    from cxrl.rl.policy import fitting_reports

    shorthands = dict(data=data, seeds=seeds, variants=variants, rewards=rewards, device=device, jobs=jobs)
    cfg = ReproduceConfig.load(
        preset, {**as_overrides(overrides), **{k: v for k, v in shorthands.items() if v is not None}}
    )
    cfg.chosen()  # fail early on unknown variants
    reproduction = Reproduction(cfg, out, scorers_from_yaml(cfg.rewards, cfg.device))
    rl = reproduction._rl_config(VARIANTS[0], cfg.seeds[0])
    anchor = load_anchor(rl.generator, cfg.device)  # its tokenizer sets which reports fit (M tokens)
    train, test = split_reports(cfg.data)
    train = fitting_reports(anchor, train, rl.max_report_tokens)
    prompts = held_out(fitting_reports(anchor, test, rl.max_report_tokens), cfg.eval, cfg.data)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "config.yaml", cfg.to_yaml())
    return reproduction.run(train, prompts)
