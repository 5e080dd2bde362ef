"""`cxrl evaluate` (Tables 1 and 2a for any generators) and `cxrl reproduce` (the paper's comparison)."""

from __future__ import annotations

import argparse
import logging

from cxrl.config import add_set_argument
from cxrl.eval import tables

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    _register_evaluate(subparsers)
    _register_reproduce(subparsers)


def _register_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="generators against the anchor on held-out reports: Table 1 and 2a with paired differences",
        description=(
            "Sample each generator on the held-out (report, seed) pairs (or read its images), score the "
            "images with the reward models and print Table 1 and Table 2a: every metric with its bootstrap "
            "interval over reports and its paired difference to the anchor. SPEC is [LABEL=]anchor[:DIR], "
            "[LABEL=]ckpt:PATH (checkpoint or run dir), [LABEL=]images:DIR (DIR/reports.csv with columns "
            "file,report,prompt_id), or real. The first ckpt's run gives the settings not set here, so "
            "`cxrl evaluate ckpt:RUN_DIR` repeats the run's own evaluation (its eval.json)."
        ),
    )
    p.add_argument("specs", nargs="*", metavar="SPEC", help="generators (also --generator)")
    p.add_argument(
        "--generator", action="append", default=[], metavar="SPEC", help="a generator (repeatable)"
    )
    p.add_argument(
        "--data",
        default=None,
        help="dataset directory: its test reports and real images (default: the run's; none: the IU split)",
    )
    p.add_argument(
        "--prompts", type=int, default=None, help="N held-out reports (default: the run's, else 48)"
    )
    p.add_argument(
        "--samples",
        dest="samples_per_report",
        type=int,
        default=None,
        help="K images per report (MS-SSIM needs 2+)",
    )
    p.add_argument("--with-findings", type=float, default=None, help="share of reports with findings")
    p.add_argument("--seed", type=int, default=None, help="report choice, noise seeds and bootstrap seed")
    p.add_argument(
        "--steps", dest="num_steps", type=int, default=None, help="DDIM steps (default: the run's, else 50)"
    )
    p.add_argument(
        "--guidance", dest="guidance_scale", type=float, default=None, help="classifier-free guidance scale"
    )
    p.add_argument("--eta", type=float, default=None, help="DDIM eta")
    p.add_argument("--batch-size", type=int, default=None, help="images per generator forward pass")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (0 = none)")
    p.add_argument("--confidence", type=float, default=None, help="interval coverage (default 0.95)")
    p.add_argument(
        "--uncertain",
        default=None,
        choices=["exclude", "positive", "negative"],
        help="AUROC: uncertain labels",
    )
    p.add_argument(
        "--absent", default=None, choices=["negative", "exclude"], help="AUROC: unmentioned labels"
    )
    p.add_argument(
        "--base",
        default=None,
        help="base pipeline dir of the anchor and ckpt (default: the run's / default world)",
    )
    p.add_argument(
        "--rewards",
        default=None,
        help="RewardModelsConfig YAML (default: the run's in-process models, else the default world's)",
    )
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument(
        "--save-images",
        default=None,
        help="write each model generator's images to DIR/<label>/ (images:DIR format)",
    )
    p.add_argument("--json", default=None, help="write the tables as JSON here")
    p.add_argument("--markdown", default=None, help="write the tables as markdown here")
    p.set_defaults(func=run_evaluate)


def _register_reproduce(subparsers) -> None:
    from cxrl.eval.reproduce import PRESETS, VARIANTS

    p = subparsers.add_parser(
        "reproduce",
        help="the paper's comparison and ablations on the default world, over seeds",
        description=(
            "Train CXRL, w/o ACE, w/o RLCF and each reward alone from the anchor (for each seed), evaluate "
            "them with the anchor, and write Table 1, 2a and 2b as markdown and JSON."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset", default="cpu-small", help=f"size of the runs: {', '.join(PRESETS)} or a YAML path"
    )
    p.add_argument("--data", default=None, help="dataset directory (default: the preset's)")
    p.add_argument("--out", default="out/reproduce", help="output directory (runs, tables)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="run only these variants: " + ", ".join(v.slug for v in VARIANTS),
    )
    p.add_argument(
        "--rewards", default=None, help="RewardModelsConfig YAML (default: the default-world models)"
    )
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument(
        "--jobs", type=int, default=None, help="runs at once, one process each (default: the preset's)"
    )
    add_set_argument(p, "train.epochs=4 --set eval.prompts=64")
    p.set_defaults(func=run_reproduce)


def run_evaluate(args) -> int:
    from cxrl.eval.compare import evaluate_generators, setup_for
    from cxrl.eval.generators import parse_spec
    from cxrl.rewards.factory import RewardModelsConfig, build_scorers, scorers_from_yaml

    specs = [parse_spec(s) for s in [*args.specs, *args.generator]]
    if not specs:
        raise ValueError("give at least one generator SPEC, e.g. ckpt:RUN_DIR")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two generators share a label in {names}; name them with LABEL=SPEC")
    setup = setup_for(specs, vars(args), args.base)
    if args.rewards is not None or setup.reward_models is None:
        scorers = scorers_from_yaml(args.rewards, args.device)
    else:
        scorers = build_scorers(
            RewardModelsConfig.model_validate(setup.reward_models | {"device": args.device})
        )
    rows = evaluate_generators(specs, setup, scorers, args.device, args.save_images)
    print(tables.write_tables(rows, meta=setup.meta(), markdown_path=args.markdown, json_path=args.json))
    return 0


def run_reproduce(args) -> int:
    from cxrl.eval.reproduce import reproduce

    text = reproduce(
        args.preset,
        out=args.out,
        data=args.data,
        seeds=args.seeds,
        variants=args.variants,
        rewards=args.rewards,
        device=args.device,
        jobs=args.jobs,
        overrides=args.set,
    )
    print(text)
    return 0
