"""`cxrl evaluate` (Tables 1 and 2a for any generators) and `cxrl reproduce` (the paper's comparison)."""

from __future__ import annotations

import argparse
import logging

from cxrl.eval import tables

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    _register_evaluate(subparsers)
    _register_reproduce(subparsers)


def _register_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="Table 1 (r_align, AUROC, CXR-CLIP) and Table 2a (FID, MS-SSIM) for generators",
        description=(
            "Generate images for held-out test reports with each generator (or read them), score them "
            "with the reward models and print Table 1 and Table 2a with bootstrap intervals over prompts. "
            "SPEC is [LABEL=]anchor[:DIR], [LABEL=]ckpt:PATH (checkpoint or run dir), "
            "[LABEL=]images:DIR (DIR/reports.csv with columns file,report,prompt_id), or real."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--generator", action="append", required=True, metavar="SPEC", help="a generator (repeatable)"
    )
    p.add_argument(
        "--data",
        required=True,
        help="dataset directory: test reports are the prompts, its images the FID reference",
    )
    p.add_argument("--prompts", type=int, default=100, help="N test reports")
    p.add_argument("--samples", type=int, default=4, help="K images per report (MS-SSIM needs 2+)")
    p.add_argument("--seed", type=int, default=0, help="prompt selection, sampling noise and bootstrap seed")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta")
    p.add_argument("--batch-size", type=int, default=8, help="images per generator forward pass")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0 = none)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval coverage")
    p.add_argument(
        "--uncertain",
        default="exclude",
        choices=["exclude", "positive", "negative"],
        help="AUROC: uncertain labels",
    )
    p.add_argument(
        "--absent", default="negative", choices=["negative", "exclude"], help="AUROC: unmentioned labels"
    )
    p.add_argument(
        "--base",
        default=None,
        help="base pipeline dir for anchor/ckpt (default: default world / checkpoint's)",
    )
    p.add_argument(
        "--rewards", default=None, help="RewardModelsConfig YAML (default: the default-world models)"
    )
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument(
        "--save-images",
        default=None,
        help="write each generator's images to DIR/<label>/ (images:DIR format)",
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
    p.set_defaults(func=run_reproduce)


def run_evaluate(args) -> int:
    from pathlib import Path

    from cxrl.eval.evaluate import EvalConfig, Evaluator, select_prompts
    from cxrl.eval.generators import RealSource, parse_spec
    from cxrl.rewards.factory import scorers_from_yaml

    cfg = EvalConfig(
        prompts=args.prompts, samples_per_prompt=args.samples, seed=args.seed, num_steps=args.steps,
        guidance_scale=args.guidance, eta=args.eta, batch_size=args.batch_size, bootstrap=args.bootstrap,
        confidence=args.confidence, uncertain=args.uncertain, absent=args.absent, device=args.device,
    )  # fmt: skip
    sources = [parse_spec(s, cfg.sampling(), args.base, cfg.prompts, cfg.device) for s in args.generator]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"two generators share a label in {names}; name them with LABEL=SPEC")
    evaluator = Evaluator(
        cfg, scorers_from_yaml(args.rewards, cfg.device), select_prompts(args.data, cfg.prompts, cfg.seed)
    )
    rows = []
    for source in sources:
        save = Path(args.save_images) / _safe(source.name) if args.save_images else None
        rows.append(evaluator.evaluate(source, save, with_fid=not isinstance(source, RealSource)))
    meta = {"data": args.data, **cfg.model_dump(exclude={"device"})}
    print(tables.write_tables(rows, meta=meta, markdown_path=args.markdown, json_path=args.json))
    return 0


def run_reproduce(args) -> int:
    from cxrl.eval.reproduce import reproduce

    text = reproduce(
        args.preset, out=args.out, data=args.data, seeds=args.seeds, variants=args.variants,
        rewards=args.rewards, device=args.device,
    )  # fmt: skip
    print(text)
    return 0


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
