"""`cxrl pretrain …`: training the reward models and the default-world generator.

One module per model (:mod:`.posture`, :mod:`.diagnostic`, :mod:`.clip`, :mod:`.generator`), what
the reward models' commands share (:mod:`.common`: data, seeds, checkpoint writing), the one fit
loop (:mod:`.fit`), the contrastive losses (:mod:`.losses`), the vocabulary learners (:mod:`.vocab`)
and the command (:mod:`.cli`). ``cxrl.models`` defines the models; this package
trains them (and may use ``cxrl.rewards`` and ``cxrl.rl``; ``cxrl.models`` may not).
"""
