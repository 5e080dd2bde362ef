"""`cxrl reproduce`: the CXRL paper's comparison and ablations, over seeds (Tables 1, 2a, 2b).

For each seed, starting from the same anchor (the frozen base generator):

- ``CXRL``: all three rewards with comparative feedback (RLCF) and ACE (Han et al., MICCAI 2024);
- ``w/o ACE``: LoRA only; ``w/o RLCF (direct feedback)``: rewards without the anchor terms;
- ``+ r_align``, ``+ r_diag``, ``+ r_consist``: each reward alone (Table 2b, Exp. 1-3; Exp. 4 is CXRL).

Table 1 also gets a row the paper does not have: the real test images of the prompts, scored by
the same models (the ceiling of r_align, AUROC and CXR-CLIP similarity in this world).

Each variant is trained with the one epoch engine (:class:`cxrl.rl.engine.Engine`, fresh noise each
epoch, in-process rewards)
and evaluated with :class:`cxrl.eval.evaluate.Evaluator` on the seed's held-out reports and noise,
together with the anchor. Rows are aggregated over seeds (mean ± sd; the per-seed rows and
intervals are kept in the JSON). Every finished (variant, seed) leaves ``runs/<slug>-seed<s>/eval.json``;
a re-run skips finished ones and resumes interrupted training from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from cxrl.config import ConfigModel
from cxrl.eval.bootstrap import over_seeds
from cxrl.eval.evaluate import EvalConfig, Evaluator
from cxrl.eval.generators import PolicySource, Prompt, RealSource, load_anchor, policy_from_config
from cxrl.eval.tables import AblationRow, Row, rows_from_json, tables_json, write_tables
from cxrl.infra.fileio import atomic_write_text

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
ANCHOR = "anchor"
REAL = "real"  # the real test images of the prompts: the ceiling of Table 1 in this world


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
TABLE2B = (("-", "Anchor Model", ANCHOR), ("1", "+ r_align", "align"), ("2", "+ r_diag", "diag"),
           ("3", "+ r_consist", "consist"), ("4", "r_align + r_diag + r_consist", "cxrl"))  # fmt: skip


class ReproduceConfig(ConfigModel):
    """A reproduction: which RL preset, which data, which seeds and variants, how to evaluate."""

    train_preset: str = Field("cpu-small", description="RL preset name (cxrl/rl/presets) or YAML path")
    train: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the RL preset")
    data: str = Field(
        "data/world", description="dataset directory: train reports train, test reports evaluate"
    )
    seeds: list[int] = Field([0, 1], min_length=1, description="one training run and evaluation per seed")
    variants: list[str] | None = Field(None, description="variant slugs to run (None = all)")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="held-out evaluation settings")
    rewards: str | None = Field(None, description="RewardModelsConfig YAML; None = the default-world models")
    device: str = Field("cpu", description="torch device for training and evaluation")

    def chosen(self) -> list[Variant]:
        slugs = [v.slug for v in VARIANTS]
        unknown = sorted(set(self.variants or []) - set(slugs))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {slugs}")
        return [v for v in VARIANTS if self.variants is None or v.slug in self.variants]


def load_config(preset: str, **overrides: Any) -> ReproduceConfig:
    """A preset name or YAML path, with keyword overrides (None values are ignored)."""
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown reproduce preset {preset!r}; choose one of {list(PRESETS)} or give a YAML path"
            )
    return ReproduceConfig.from_yaml(path, {k: v for k, v in overrides.items() if v is not None})


class Reproduction:
    """Runs the variants of a :class:`ReproduceConfig` into ``out``."""

    def __init__(self, cfg: ReproduceConfig, out: str | Path, scorers: tuple):
        self.cfg, self.out, self.scorers = cfg, Path(out), scorers

    def run(self, train_prompts: Sequence[str], eval_prompts: dict[int, list[Prompt]]) -> str:
        """Train and evaluate every (variant, seed); write ``tables.md``/``tables.json``; return the markdown."""
        per_seed: dict[str, list[Row]] = {}
        for seed in self.cfg.seeds:
            eval_cfg = self.cfg.eval.model_copy(update={"seed": seed, "device": self.cfg.device})
            evaluator = Evaluator(eval_cfg, self.scorers, eval_prompts[seed])
            per_seed.setdefault(REAL, []).append(self._real(seed, evaluator))
            per_seed.setdefault(ANCHOR, []).append(self._anchor(seed, evaluator))
            for variant in self.cfg.chosen():
                per_seed.setdefault(variant.slug, []).append(
                    self._variant(variant, seed, train_prompts, evaluator)
                )
        return self._tables(per_seed)

    def _real(self, seed: int, evaluator: Evaluator) -> Row:
        def make() -> Row:
            return evaluator.evaluate(RealSource("Real test images"), with_fid=False)

        return self._cached(self.out / "runs" / f"{REAL}-seed{seed}", make, self._key(None, seed, evaluator))

    def _anchor(self, seed: int, evaluator: Evaluator) -> Row:
        def make() -> Row:
            rl = self._rl_config(VARIANTS[0], seed)
            policy = load_anchor(rl.generator, self.cfg.device)
            return evaluator.evaluate(PolicySource("Anchor", policy, evaluator.cfg.sampling(), anchor=True))

        return self._cached(
            self.out / "runs" / f"{ANCHOR}-seed{seed}", make, self._key(None, seed, evaluator)
        )

    def _variant(self, variant: Variant, seed: int, prompts: Sequence[str], evaluator: Evaluator) -> Row:
        run_dir = self.out / "runs" / f"{variant.slug}-seed{seed}"

        def make() -> Row:
            from cxrl.rl.anchor import MemoryAnchorStore
            from cxrl.rl.engine import Engine
            from cxrl.rl.plan import FreshNoise
            from cxrl.rl.sinks import LogLine

            rl = self._rl_config(variant, seed)
            policy = policy_from_config(rl, device=self.cfg.device)
            plan = FreshNoise(list(prompts), rl.sampling, rl.seed)
            trainer = Engine(
                rl, policy, self._backend(rl), plan, run_dir, MemoryAnchorStore(), [LogLine(rl.epochs)]
            )
            trainer.resume()
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                trainer.run()
            finally:
                trainer.close()
            train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
            row = evaluator.evaluate(PolicySource(variant.label, policy, evaluator.cfg.sampling()))
            last = trainer.history[-1] if trainer.history else {}
            row.info.update(
                train_s=round(train_s, 2),
                train_cpu_s=round(train_cpu_s, 2),
                epochs=trainer.epoch,
                final_reward_mean=last.get("policy/total"),
            )
            return row

        return self._cached(run_dir, make, self._key(variant, seed, evaluator))

    def _key(self, variant: Variant | None, seed: int, evaluator: Evaluator) -> dict[str, Any]:
        """What a cached result depends on: a change re-evaluates (training resumes from its checkpoint)."""
        rl = self._rl_config(variant or VARIANTS[0], seed)
        return {
            "eval": evaluator.cfg.model_dump(mode="json"),
            "prompts": [p.id for p in evaluator.prompts],
            "train": None if variant is None else rl.model_dump(mode="json"),
            "generator": rl.generator,
        }

    def _rl_config(self, variant: Variant, seed: int):
        from cxrl.rl.config import load_preset

        overrides = {
            **self.cfg.train,
            **variant.overrides,
            "seed": seed,
            "data": self.cfg.data,
            "device": self.cfg.device,
        }
        return load_preset(self.cfg.train_preset, overrides)

    def _backend(self, rl):
        from cxrl.rewards.backend import InProcessRewards

        posture, diagnostic, consistency = self.scorers
        w = rl.rewards.weights
        return InProcessRewards(
            posture if "align" in w else None,
            diagnostic if "diag" in w else None,
            consistency if "consist" in w else None,
            weights=w,
            rlcf=False,  # direct mode: the engine forms the RLCF total against its anchors
        )

    @staticmethod
    def _cached(run_dir: Path, make, key: dict[str, Any]) -> Row:
        path = run_dir / "eval.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("meta") == key:
                log.info("reusing %s", path)
                return rows_from_json(data)[0]
            log.info("%s was made with other settings; evaluating again", path)
        row = make()
        atomic_write_text(path, json.dumps(tables_json([row], meta=key), indent=1, allow_nan=False))
        return row

    def _tables(self, per_seed: dict[str, list[Row]]) -> str:
        labels = {ANCHOR: "Anchor", REAL: "Real test images"} | {v.slug: v.label for v in VARIANTS}
        rows = {slug: aggregate(labels[slug], seed_rows) for slug, seed_rows in per_seed.items()}
        main = [rows[s] for s in TABLE1_ROWS if s in rows]
        ablation = [AblationRow(exp, reward, rows[s]) for exp, reward, s in TABLE2B if s in rows]
        extra = [r for s, r in rows.items() if s not in TABLE1_ROWS]
        meta = {"seeds": self.cfg.seeds, "train_preset": self.cfg.train_preset, "data": self.cfg.data,
                "prompts": self.cfg.eval.prompts, "samples_per_prompt": self.cfg.eval.samples_per_prompt}  # fmt: skip
        text = write_tables(main, ablation, meta, markdown_path=self.out / "tables.md")
        data = tables_json(main + extra, ablation, meta)
        for table in ("table1", "table2a"):
            data[table]["rows"] = [r.name for r in main]
        data["per_seed"] = {s: tables_json(r)["rows"] for s, r in per_seed.items()}
        atomic_write_text(self.out / "tables.json", json.dumps(data, indent=1, allow_nan=False))
        return text


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
) -> str:
    """`cxrl reproduce`: read the dataset, build the reward models, run everything, return the markdown."""
    from cxrl.eval.evaluate import select_prompts
    from cxrl.rewards.factory import scorers_from_yaml
    from cxrl.world.dataset import load_records

    cfg = load_config(preset, data=data, seeds=seeds, variants=variants, rewards=rewards, device=device)
    cfg.chosen()  # fail early on unknown variants
    train = list(dict.fromkeys(r.report for r in load_records(cfg.data, split="train")))
    eval_prompts = {s: select_prompts(cfg.data, cfg.eval.prompts, s) for s in cfg.seeds}
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / "config.yaml", cfg.to_yaml())
    return Reproduction(cfg, out, scorers_from_yaml(cfg.rewards, cfg.device)).run(train, eval_prompts)
