"""The anchor's parts under their former home: new code imports them from their modules.

- :mod:`cxrl.rl.anchor_store`: the anchor stores (memory, directory; Redis in the trainer);
- :mod:`cxrl.rl.versioning`: what a stored anchor depends on (``anchor_version``, ``sampler_version``);
- :mod:`cxrl.rl.rlcf`: the scoring step, where the RLCF total is formed (``score_chunk``);
- :mod:`cxrl.rl.frozen_anchor`: the base generator on a copy of its own (``FrozenAnchor``);
- :mod:`cxrl.rl.anchor_ahead`: the anchors of coming epochs on a background thread (``AnchorAhead``).

Kept for trainer/runner.py and cxrl/eval/evaluate.py, which still import these names from here.
"""

from cxrl.rl.anchor_ahead import AnchorAhead
from cxrl.rl.frozen_anchor import FrozenAnchor
from cxrl.rl.rlcf import direct_total
from cxrl.rl.versioning import sampler_version

__all__ = ["AnchorAhead", "FrozenAnchor", "direct_total", "sampler_version"]
