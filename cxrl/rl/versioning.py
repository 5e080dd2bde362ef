"""What a stored anchor sample depends on, hashed into the version that names its store.

An anchor's image and reward components for a (report, seed) pair depend on the generator's
weights, the anchor's sampler, the reward models and the report labeler; the anchor stores
(:mod:`cxrl.rl.anchor_store`, the trainer's Redis cache) keep one namespace per version, so a change
of any of them starts an empty one and never serves a stale anchor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from cxrl.models.generator import generator_id
from cxrl.reports.labeler import labeler_version
from cxrl.rewards.types import ModelInfo
from cxrl.rl.config import SamplingSettings
from cxrl.rl.sampler import Sampler


def anchor_version(generator_id: str, sampling: dict, models: Sequence[ModelInfo]) -> str:
    """Everything an anchor's image and components depend on, hashed into a short version string."""
    payload = {
        "generator": generator_id,  # weights and tokenizer files of the pipeline
        "sampling": sampling,
        "models": sorted([m.name, m.version, m.weights_hash] for m in models),
        "labeler": labeler_version(),  # the diagnostic accuracy is scored against the report's labels
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def sampler_version(
    generator: str, sampling: SamplingSettings, models: Sequence[ModelInfo], generator_hash: str | None = None
) -> str:
    """:func:`anchor_version` of a run: its generator (name or directory), sampler and reward models."""
    return anchor_version(
        generator_hash or generator_id(generator),
        Sampler.anchor(sampling).version(),  # the training anchor's sampler
        models,
    )
