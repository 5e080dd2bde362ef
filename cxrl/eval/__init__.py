"""The one held-out evaluation of generators: the trainer's end of run, `cxrl evaluate`, `cxrl reproduce`.

- :mod:`~cxrl.eval.heldout`: which reports and noise seeds (``HeldOutConfig``, ``held_out``, ``held_out_seed``);
- :mod:`~cxrl.eval.evaluate`: ``Evaluator`` samples and scores generators on those (report, seed) pairs,
  the anchor once; ``compare`` gives the figures of a run's ``eval.json``;
- :mod:`~cxrl.eval.scores`: per-image ``Scored``, metrics (``reward_total``, ``r_align``, ``auroc``,
  ``clip_similarity``, ``diag_acc``, ``fid``, ``msssim``) and paired policy − anchor differences with
  bootstrap intervals over reports;
- :mod:`~cxrl.eval.compare` (`cxrl evaluate`), :mod:`~cxrl.eval.reproduce` (`cxrl reproduce`),
  :mod:`~cxrl.eval.tables` (Tables 1, 2a, 2b); metrics' parts: auroc, fid, msssim, bootstrap.
"""
