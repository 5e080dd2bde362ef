"""Generator SPECs for ``cxrl evaluate``: where the images of each evaluated row come from.

A SPEC is ``[LABEL=]KIND[:ARG]``:

- ``anchor`` or ``anchor:DIR``: the frozen base generator (the default-world pipeline, a
  ``--base`` directory, or DIR, e.g. RoentGen);
- ``ckpt:PATH``: a CXRL checkpoint (LoRA + ACE) written by the trainer, or a run directory
  (its latest checkpoint); the base pipeline is the one named in the checkpoint's run
  config unless ``--base`` is given;
- ``images:DIR``: another generator's images with their reports (:mod:`cxrl.eval.imagedir`);
- ``real``: the real test images of the prompts (one per prompt): the ceiling for Table 1.

``LABEL=`` names the row in the tables (default: the SPEC itself).

Model generators sample every (prompt i, sample k) from the same seed for every
generator (DDIM with the configured eta, the trainer's sampler), so the anchor and a
CXRL policy are compared on identical initial noise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from cxrl import imaging
from cxrl.eval import imagedir
from cxrl.eval.imagedir import Group

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """A held-out test report (and its real image, for FID and the ``real`` row)."""

    id: str
    report: str
    image_path: Path | None = None


@dataclass(frozen=True)
class Sampling:
    """How model generators sample (the same for every row of a comparison)."""

    num_steps: int = 50
    guidance_scale: float = 5.0
    eta: float = 1.0
    batch_size: int = 8  # images per forward pass
    seed: int = 0


class Source(Protocol):
    name: str

    def groups(self, prompts: Sequence[Prompt], samples: int) -> Iterator[Group]:
        """One Group per prompt (``samples`` images each, where the source generates)."""
        ...


def image_seed(seed: int, prompt_index: int, sample: int) -> int:
    """The noise seed of sample ``k`` of prompt ``i``: shared by every generator in a comparison."""
    return int(np.random.SeedSequence([seed, prompt_index, sample]).generate_state(1)[0] & 0x7FFFFFFF)


class PolicySource:
    """Samples from a :class:`cxrl.models.generator.Policy` (the anchor: no LoRA, no ACE)."""

    def __init__(self, name: str, policy, sampling: Sampling, anchor: bool = False):
        self.name = name
        self.policy = policy.eval()
        self.sampling = sampling
        self.anchor = anchor

    def groups(self, prompts: Sequence[Prompt], samples: int) -> Iterator[Group]:
        from cxrl.rl.sampler import sample

        s = self.sampling
        per_pass = max(1, s.batch_size // samples)  # prompts per forward pass
        for start in range(0, len(prompts), per_pass):
            chunk = list(prompts[start : start + per_pass])
            reports = [p.report for p in chunk for _ in range(samples)]
            seeds = [image_seed(s.seed, start + i, k) for i in range(len(chunk)) for k in range(samples)]
            embeds = self.policy.encode_prompts(reports)  # [b, M, d]
            if self.anchor and not self.policy.is_anchor:
                with self.policy.anchor():
                    traj = sample(self.policy, embeds, seeds, s.num_steps, s.guidance_scale, s.eta)
            else:
                traj = sample(self.policy, embeds, seeds, s.num_steps, s.guidance_scale, s.eta)
            images = traj.images.cpu().view(len(chunk), samples, *traj.images.shape[1:])  # [n,K,1,H,W]
            for p, imgs in zip(chunk, images, strict=True):
                yield Group(p.id, p.report, imgs)


class ImageDirSource:
    """Pre-generated images (``images:DIR``); the prompts of the comparison are not used."""

    def __init__(self, name: str, directory: str | Path, max_prompts: int | None = None):
        self.name = name
        self.directory = Path(directory)
        self.max_prompts = max_prompts
        imagedir.read_index(self.directory)  # fail early on a bad directory

    def groups(self, prompts: Sequence[Prompt], samples: int) -> Iterator[Group]:
        yield from imagedir.iter_groups(self.directory, self.max_prompts)

    def count(self, prompts: Sequence[Prompt]) -> int:
        n = imagedir.count_groups(self.directory)
        return n if self.max_prompts is None else min(n, self.max_prompts)


class RealSource:
    """The real test image of each prompt (one per prompt)."""

    name = "real"

    def __init__(self, name: str = "real"):
        self.name = name

    def groups(self, prompts: Sequence[Prompt], samples: int) -> Iterator[Group]:
        for p in prompts:
            if p.image_path is None:
                raise ValueError(f"prompt {p.id!r} has no real image; the 'real' row needs a dataset")
            yield Group(p.id, p.report, imaging.load_image(p.image_path)[None])


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
    from cxrl.rl.config import CXRLConfig

    directory = resolve_checkpoint(path)
    state = json.loads((directory / "state.json").read_text())
    if "config" not in state:
        raise ValueError(f"{directory}/state.json has no run config; cannot rebuild the policy")
    cfg = CXRLConfig.model_validate(state["config"])
    policy = policy_from_config(cfg, base, device)
    load_lora(policy, directory)
    load_ace(policy, directory)
    log.info(
        "loaded CXRL checkpoint %s (epoch %s) on base %s",
        directory,
        state.get("epoch"),
        base or cfg.generator,
    )
    return policy.eval()


def load_anchor(base: str | None = None, device: str = "cpu"):
    from cxrl.models.generator import Policy, load_pipeline

    return Policy(load_pipeline(base or "default", device=device), lora_rank=0, ace_tokens=0).to(device)


def parse_spec(
    spec: str,
    sampling: Sampling,
    base: str | None = None,
    max_prompts: int | None = None,
    device: str = "cpu",
) -> Source:
    """``[LABEL=]KIND[:ARG]`` -> a Source (see the module docstring)."""
    label, _, body = spec.partition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
    if "=" in spec.split(":", 1)[0] and not label:
        raise ValueError(f"empty label in generator spec {spec!r}; write LABEL=SPEC")
    kind, _, arg = body.partition(":")
    name = label or body
    if kind == "anchor":
        return PolicySource(name, load_anchor(arg or base, device), sampling, anchor=True)
    if kind == "ckpt":
        if not arg:
            raise ValueError("ckpt needs a path: ckpt:RUN_DIR or ckpt:RUN_DIR/checkpoints/epoch-000010")
        return PolicySource(name, load_policy_checkpoint(arg, base, device), sampling)
    if kind == "images":
        if not arg:
            raise ValueError("images needs a directory: images:DIR (with DIR/reports.csv)")
        return ImageDirSource(name, arg, max_prompts)
    if kind == "real" and not arg:
        return RealSource(name)
    raise ValueError(f"unknown generator spec {spec!r}; use anchor[:DIR], ckpt:PATH, images:DIR or real")
