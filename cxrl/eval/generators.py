"""Generator SPECs for ``cxrl evaluate``: where the images of each evaluated row come from.

A SPEC is ``[LABEL=]KIND[:ARG]``:

- ``anchor`` or ``anchor:DIR``: the frozen base generator (the default-world pipeline, a
  ``--base`` directory, or DIR, e.g. RoentGen);
- ``ckpt:PATH``: a CXRL checkpoint (LoRA + ACE) written by the trainer, or a run directory
  (its latest checkpoint); the base pipeline is the one named in the checkpoint's run
  config unless ``--base`` is given. A run directory also gives the evaluation its settings
  (:func:`run_settings`: held-out reports, sampler, reward weights and models);
- ``images:DIR``: another generator's images with their reports (:mod:`cxrl.eval.imagedir`);
- ``real``: the real test images of the prompts (one per prompt): the ceiling for Table 1.

``LABEL=`` names the row in the tables (default: the SPEC itself). Model generators are sampled
on the held-out (report, seed) pairs of :mod:`cxrl.eval.heldout`, so every row of a comparison
sees the same initial noise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cxrl.eval import imagedir

log = logging.getLogger(__name__)

Kind = Literal["anchor", "ckpt", "images", "real"]


@dataclass(frozen=True)
class Spec:
    """A parsed generator SPEC (the module docstring)."""

    name: str  # row label
    kind: Kind
    arg: str  # DIR or PATH ('' for anchor / real)


def parse_spec(spec: str) -> Spec:
    """``[LABEL=]KIND[:ARG]`` -> a checked Spec (a checkpoint or image directory must exist)."""
    head = spec.split(":", 1)[0]
    label, _, body = spec.partition("=") if "=" in head else ("", "", spec)
    if "=" in head and not label:
        raise ValueError(f"empty label in generator spec {spec!r}; write LABEL=SPEC")
    kind, _, arg = body.partition(":")
    name = label or body
    if kind == "anchor":
        return Spec(name, "anchor", arg)
    if kind == "ckpt":
        if not arg:
            raise ValueError("ckpt needs a path: ckpt:RUN_DIR or ckpt:RUN_DIR/checkpoints/epoch-000010")
        resolve_checkpoint(arg)
        return Spec(name, "ckpt", arg)
    if kind == "images":
        if not arg:
            raise ValueError("images needs a directory: images:DIR (with DIR/reports.csv)")
        imagedir.read_index(arg)  # fail early on a bad directory
        return Spec(name, "images", arg)
    if kind == "real" and not arg:
        return Spec(name, "real", "")
    raise ValueError(f"unknown generator spec {spec!r}; use anchor[:DIR], ckpt:PATH, images:DIR or real")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory / checkpoints directory -> its latest checkpoint."""
    from cxrl.rl.checkpoint import latest_checkpoint

    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path / "checkpoints", path):
        if (root / "latest").is_file():
            found = latest_checkpoint(root)
            if found is not None:
                return found
    raise ValueError(
        f"{path} is not a CXRL checkpoint (no state.json) nor a run directory with checkpoints/latest"
    )


def checkpoint_config(path: str | Path):
    """The CXRLConfig a checkpoint (or a run directory's latest one) was trained with."""
    from cxrl.rl.config import CXRLConfig

    directory = resolve_checkpoint(path)
    state = json.loads((directory / "state.json").read_text())
    if "config" not in state:
        raise ValueError(f"{directory}/state.json has no run config; cannot rebuild the policy")
    return CXRLConfig.model_validate(state["config"])


def run_settings(path: str | Path) -> dict[str, Any]:
    """What a run directory's ``config.yaml`` (written by `cxrl train`) says about its evaluation.

    Returns ``eval`` (the held-out settings mapping) and ``reward_models`` (the in-process reward
    models mapping, None when the run scored over gRPC); empty when the run wrote no config.
    """
    path = Path(path).resolve()
    # RUN_DIR, RUN_DIR/checkpoints or RUN_DIR/checkpoints/epoch-N: the config beside the checkpoints
    candidates = (path, *path.parents[:2])
    run_dir = next(
        (p for p in candidates if (p / "config.yaml").is_file() and (p / "checkpoints").is_dir()), None
    )
    if run_dir is None:
        return {}
    data = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    rewards = data.get("rewards") if isinstance(data.get("rewards"), dict) else {}
    inprocess = rewards.get("url", "inprocess") == "inprocess"
    held = data.get("eval") if isinstance(data.get("eval"), dict) else {}
    return {"eval": held, "reward_models": rewards.get("models") if inprocess else None}


def policy_from_config(cfg, base: str | None = None, device: str = "cpu"):
    """The (untrained) CXRL policy a run config describes, on ``base`` (default: cfg.generator) and ``device``."""
    from cxrl.rl.policy import make_policy

    update = {"device": device} | ({"generator": str(base)} if base else {})
    return make_policy(cfg.model_copy(update=update))


def load_policy_checkpoint(path: str | Path, base: str | None = None, device: str = "cpu"):
    """Rebuild the policy a checkpoint was trained with (LoRA rank/targets, ACE) and load its weights.

    ``path`` is a checkpoint directory or a run directory (its latest checkpoint); the policy
    samples on ``device`` whatever device the run trained on.
    """
    from cxrl.rl.checkpoint import load_ace, load_lora

    directory = resolve_checkpoint(path)
    cfg = checkpoint_config(directory)
    policy = policy_from_config(cfg, base, device)
    load_lora(policy, directory)
    load_ace(policy, directory)
    log.info("loaded CXRL checkpoint %s on base %s", directory, base or cfg.generator)
    return policy.eval()


def load_anchor(base: str | None = None, device: str = "cpu"):
    from cxrl.models.generator import load_pipeline
    from cxrl.rl.policy import Policy

    return Policy(load_pipeline(base or "default", device=device), lora_rank=0, ace_tokens=0).to(device)
