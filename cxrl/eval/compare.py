"""`cxrl evaluate`: generators against the anchor on the held-out pairs -> table rows.

The settings come, in this order, from the command line, from the run directory of the first
``ckpt:`` generator (its checkpoint's RL config: sampler, reward weights, data, base generator,
token limit; its ``config.yaml``: held-out settings and in-process reward models), and from the
defaults. So ``cxrl evaluate ckpt:RUN_DIR`` evaluates a finished run exactly as the trainer did at
its end and reproduces the figures of its ``eval.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrl import imaging
from cxrl.eval import imagedir
from cxrl.eval.evaluate import Evaluator, feature_model
from cxrl.eval.generators import Spec, checkpoint_config, load_anchor, load_policy_checkpoint, run_settings
from cxrl.eval.heldout import HeldOutConfig, held_out, split_reports
from cxrl.eval.scores import Scored
from cxrl.eval.tables import Row
from cxrl.rewards.types import PAPER_WEIGHTS
from cxrl.rl.config import SamplingSettings

log = logging.getLogger(__name__)

ANCHOR = "anchor"


@dataclass
class Setup:
    """Everything an evaluation of generators is made with."""

    cfg: HeldOutConfig  # held-out reports, seeds, bootstrap
    sampling: SamplingSettings  # DDIM steps, guidance, eta, batch size of model generators
    weights: dict[str, float]  # reward weights of the combined reward
    data: str | None  # dataset directory (test reports, real images); None = the IU split
    max_tokens: int = 74  # M: test reports longer than this are skipped
    base: str | None = None  # the anchor's pipeline directory; None = the default world's
    reward_models: dict[str, Any] | None = None  # RewardModelsConfig mapping; None = default models
    sources: list[str] = field(default_factory=list)  # where the settings came from

    def meta(self) -> dict[str, Any]:
        return {
            "data": self.data,
            **self.cfg.model_dump(mode="json"),
            "sampling": self.sampling.model_dump(mode="json"),
            "weights": self.weights,
            "settings_from": self.sources,
        }


def setup_for(specs: list[Spec], overrides: dict[str, Any], base: str | None = None) -> Setup:
    """Settings of an evaluation (module docstring); ``overrides``: held-out, sampling, data given on the command line."""
    held: dict[str, Any] = {}
    sampling, weights, data, max_tokens, models = SamplingSettings(), dict(PAPER_WEIGHTS), None, 74, None
    sources = []
    run = next((s for s in specs if s.kind == "ckpt"), None)
    if run is not None:
        rl = checkpoint_config(run.arg)
        settings = run_settings(run.arg)
        held = {k: v for k, v in settings.get("eval", {}).items() if k in HeldOutConfig.model_fields}
        sampling, weights, data, max_tokens = (
            rl.sampling,
            dict(rl.rewards.weights),
            rl.data,
            rl.max_report_tokens,
        )
        models = settings.get("reward_models")
        base = base or rl.generator
        sources.append(str(run.arg))
    sampling_keys = set(SamplingSettings.model_fields)
    held |= {k: v for k, v in overrides.items() if v is not None and k in HeldOutConfig.model_fields}
    sampling = sampling.model_copy(
        update={k: v for k, v in overrides.items() if v is not None and k in sampling_keys}
    )
    data = overrides.get("data") or data
    return Setup(
        HeldOutConfig(**held),
        SamplingSettings.model_validate(sampling.model_dump()),
        weights,
        data,
        max_tokens,
        base,
        models,
        sources + ["command line", "defaults"],
    )


def evaluate_generators(
    specs: list[Spec],
    setup: Setup,
    scorers: tuple,
    device: str = "cpu",
    save_images: str | Path | None = None,
) -> list[Row]:
    """The anchor's row, then one row per generator with its paired difference to the anchor."""
    from cxrl.rewards.backend import InProcessRewards
    from cxrl.rl.policy import fitting_reports

    backend = InProcessRewards(*scorers, weights=setup.weights)
    policies = {s.name: load_policy_checkpoint(s.arg, setup.base, device) for s in specs if s.kind == "ckpt"}
    anchor_spec = next((s for s in specs if s.kind == "anchor"), None)
    anchor_policy = (
        load_anchor((anchor_spec.arg if anchor_spec else "") or setup.base, device)
        if anchor_spec is not None or not policies
        else next(iter(policies.values()))  # the run's base model: the policy with adapters off
    )
    _, test = split_reports(setup.data)
    prompts = held_out(fitting_reports(anchor_policy, test, setup.max_tokens), setup.cfg, setup.data)
    ev = Evaluator(
        setup.cfg, prompts, setup.sampling, backend, setup.weights, features=feature_model(backend)
    )

    def writer(name: str) -> imagedir.ImageDirWriter | None:
        return imagedir.ImageDirWriter(Path(save_images) / _safe(name)) if save_images else None

    def sampled(name: str, policy, anchor: bool = False) -> Scored:
        w = writer(name)
        scored = ev.sampled(name, policy, anchor=anchor, save=w)
        if w is not None:
            w.close()
        return scored

    anchor_name = anchor_spec.name if anchor_spec is not None else ANCHOR
    anchor = sampled(anchor_name, anchor_policy, anchor=True)
    rows = [Row(anchor_name, ev.metrics(anchor), _info(anchor))]
    for spec in specs:
        if spec is anchor_spec:
            continue
        if spec.kind == "ckpt":
            scored = sampled(spec.name, policies[spec.name])
        elif spec.kind == "real":
            missing = [p.id for p in prompts if p.image_path is None]
            if missing:
                raise ValueError(
                    f"the 'real' row needs the test images of a dataset; give --data ({missing[0]!r} has none)"
                )
            scored = ev.scored_groups(
                spec.name, [(p.report, imaging.load_image(p.image_path)[None]) for p in prompts]
            )
        elif spec.kind == "images":
            groups = [(g.report, g.images) for g in imagedir.iter_groups(spec.arg)]
            scored = ev.scored_groups(spec.name, groups)
        else:
            raise ValueError(f"a second anchor {spec.name!r}; give one anchor per evaluation")
        paired = scored.reports == anchor.reports
        if not paired:
            log.warning("%s: its reports are not the held-out reports; no paired difference", spec.name)
        rows.append(
            Row(
                spec.name,
                ev.metrics(scored, with_fid=spec.kind != "real"),
                _info(scored),
                ev.paired([scored], anchor, with_fid=spec.kind != "real") if paired else None,
            )
        )
    return rows


def _info(scored: Scored) -> dict[str, Any]:
    return {"prompts": scored.n_prompts, "images": int(len(scored.image_prompt))}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
