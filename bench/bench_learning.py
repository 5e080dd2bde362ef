"""Learning curves: held-out gain over the anchor against training CPU-seconds, per recipe and seed.

Each recipe trains from the same base generator on the same training reports with in-process
rewards, one torch thread, until it has spent ``--budget`` CPU-seconds of this process (sampling,
anchors, reward scoring and updates: ``time.process_time``, so a busy machine slows the wall clock
but not the count); at ``--points`` evenly spaced budgets it is evaluated on the held-out reports of
``--split``: ``validation`` (training reports kept out of the training pool, for choosing settings)
or ``test`` (the held-out test reports, for the figures). Evaluation time is not counted.

    python -m bench.bench_learning --split validation --recipes demo demo-fast --seeds 0
    python -m bench.bench_learning --split test --seeds 0 1 2 --out docs/results/learning-test
    python -m bench.bench_learning --merge A/learning.json B/learning.json --out C   # runs made apart

Writes ``learning.json`` (every seed's curve, the paired differences with 95 % intervals) and
``learning.png`` (seed mean with a min-max band per recipe), and prints the CPU-seconds at which
each recipe first reaches the first recipe's final mean gain.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrl.config import parse_overrides
from cxrl.eval.evaluate import Evaluator, feature_model
from cxrl.eval.heldout import HeldOutConfig, held_out, prompts_of, select, split_reports
from cxrl.models.generator import load_pipeline
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import scorers_from_yaml
from cxrl.rewards.types import PAPER_WEIGHTS
from cxrl.rl.config import CXRLConfig
from cxrl.rl.policy import fitting_reports, make_policy
from cxrl.rl.run import Wiring, build
from trainer.config import TrainConfig

log = logging.getLogger("bench.learning")
METRICS = ("reward_total", "auroc", "clip_similarity", "fid", "msssim")  # FID/MS-SSIM: lower is better
CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def recipe_config(spec: str, seed: int) -> tuple[CXRLConfig, Any]:
    """The RL config and trainer config of ``NAME[:rl.key=value,...]`` (a trainer config with overrides)."""
    name, _, rest = spec.partition(":")
    tc = TrainConfig.load(CONFIGS / f"{name}.yaml", parse_overrides(filter(None, rest.split(","))))
    rl = tc.rl_config().model_dump(mode="json")
    rl["seed"] = seed
    return CXRLConfig.model_validate(rl), tc


def pools(n_train: int, n_val: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(training pool, validation reports, test reports): validation is cut from the training
    reports and never trained on; the test reports are the held-out split."""
    train, test = split_reports(None)
    rng = np.random.default_rng([seed, 99])
    order = [train[i] for i in rng.permutation(len(train))]
    return order[n_val : n_val + n_train], order[:n_val], test


def curve(name: str, seed: int, args, train: list[str], ev_prompts, scorers, anchor_scored, features):
    rl, tc = recipe_config(name, seed)
    backend = InProcessRewards(*scorers, weights=rl.rewards.weights, rlcf=False)
    policy = make_policy(rl, load_pipeline(rl.generator))
    reports = fitting_reports(policy, train, rl.max_report_tokens)[: tc.train_prompts]
    wiring = Wiring(plan="seed-bank", seed_bank=tc.seed_bank, anchors="memory")
    run = build(rl, reports, backend, policy=policy, wiring=wiring)
    ev = Evaluator(args.heldout, ev_prompts, rl.sampling, backend, dict(PAPER_WEIGHTS), policy, features)
    points, cpu, epoch = [], 0.0, 0
    marks = [args.budget * (i + 1) / args.points for i in range(args.points)]
    try:
        while marks:
            t0 = time.process_time()
            m = run.engine.run_epoch()
            cpu += time.process_time() - t0
            epoch += 1
            if cpu >= marks[0] or epoch >= args.max_epochs:
                marks.pop(0)
                res = ev.compare(ev.sampled("cxrl"), anchor_scored)
                diff = {k: res["diff"][k] for k in METRICS if k in res["diff"]}
                points.append(
                    {
                        "cpu_s": cpu,
                        "epochs": epoch,
                        "images": epoch * rl.sampling.images_per_epoch,
                        "train_total": m["policy/total"],
                        "diff": diff,
                    }
                )
                log.info(
                    "%s seed %d: %.0f CPU-s, %d epochs: %s",
                    name,
                    seed,
                    cpu,
                    epoch,
                    {k: round(v["value"], 4) for k, v in diff.items()},
                )
                if epoch >= args.max_epochs:
                    break
    finally:
        run.close()
    return {"recipe": name, "seed": seed, "points": points}


def reach(curves: list[dict], target: float) -> float | None:
    """CPU-seconds at which the seed-mean combined-reward gain first reaches ``target``."""
    n = min(len(c["points"]) for c in curves)
    for i in range(n):
        if np.mean([c["points"][i]["diff"]["reward_total"]["value"] for c in curves]) >= target:
            return float(np.mean([c["points"][i]["cpu_s"] for c in curves]))
    return None


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """Seed mean and min-max band of each metric against CPU-seconds (PIL: no plotting dependency)."""
    from PIL import Image, ImageDraw

    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]
    w, h, pad = 360, 260, 40
    img = Image.new("RGB", (w * len(METRICS), h + 30), "white")
    d = ImageDraw.Draw(img)
    xmax = max(p["cpu_s"] for cs in results.values() for c in cs for p in c["points"]) or 1.0
    for j, key in enumerate(METRICS):
        vals = [
            p["diff"][key]["value"]
            for cs in results.values()
            for c in cs
            for p in c["points"]
            if key in p["diff"]
        ]
        if not vals:  # FID and MS-SSIM only where the run had --data
            continue
        lo, hi = min(vals + [0.0]), max(vals + [0.0])
        hi = hi if hi > lo else lo + 1e-6
        x0 = j * w

        def xy(x, y, x0=x0, lo=lo, hi=hi):
            return x0 + pad + (w - 2 * pad) * x / xmax, pad + (h - 2 * pad) * (hi - y) / (hi - lo)

        d.rectangle([xy(0, hi), xy(xmax, lo)], outline="black")
        d.line([xy(0, 0), xy(xmax, 0)], fill=(150, 150, 150))
        d.text((x0 + pad, 8), f"{key} - anchor ({lo:+.3f}..{hi:+.3f})", fill="black")
        d.text((x0 + pad, h - pad + 6), f"training CPU-s (0..{xmax:.0f})", fill="black")
        for r, (name, cs) in enumerate(results.items()):
            colour = colours[r % len(colours)]
            n = min(len(c["points"]) for c in cs)
            if not all(key in c["points"][i]["diff"] for c in cs for i in range(n)):
                continue
            xs = [np.mean([c["points"][i]["cpu_s"] for c in cs]) for i in range(n)]
            ys = np.array([[c["points"][i]["diff"][key]["value"] for c in cs] for i in range(n)])
            band = [xy(x, y) for x, y in zip(xs, ys.max(1), strict=True)]
            band += [xy(x, y) for x, y in zip(xs[::-1], ys.min(1)[::-1], strict=True)]
            if len(band) > 2:
                d.polygon(band, fill=tuple(int(c + (255 - c) * 0.75) for c in colour))
            d.line(
                [xy(0, 0)] + [xy(x, y) for x, y in zip(xs, ys.mean(1), strict=True)],
                fill=colour,
                width=2,
            )
            d.text((x0 + pad + 4, pad + 4 + 12 * r), name, fill=colour)
    img.save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--recipes", nargs="+", default=["demo", "demo-fast"], help="trainer configs (trainer/configs)"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--split", choices=["validation", "test"], default="validation")
    p.add_argument("--budget", type=float, default=300.0, help="training CPU-seconds per run")
    p.add_argument("--points", type=int, default=3, help="evaluations per run, evenly over the budget")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--prompts", type=int, default=48, help="held-out reports per evaluation")
    p.add_argument("--samples", type=int, default=2, help="images per held-out report")
    p.add_argument("--out", default="out/learning")
    p.add_argument(
        "--data", default=None, help="world directory whose real images FID compares with (e.g. data/world)"
    )
    p.add_argument(
        "--merge", nargs="+", help="join the curves of learning.json files (same split and budget)"
    )
    args = p.parse_args(argv)
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge]
        if len({(d["split"], d["budget_cpu_s"], json.dumps(d["heldout"])) for d in docs}) != 1:
            raise SystemExit(
                "--merge: the files differ in split, budget or held-out reports; merge like with like"
            )
        results: dict[str, list[dict]] = {}
        for d in docs:
            for name, curves in d["curves"].items():
                results.setdefault(name, []).extend(curves)
        return report(results, docs[0]["split"], docs[0]["budget_cpu_s"], docs[0]["heldout"], Path(args.out))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args.heldout = HeldOutConfig(
        prompts=args.prompts, samples_per_report=args.samples, with_findings=0.5, seed=1234
    )
    train, val, test = pools(256, 96)
    scorers = scorers_from_yaml(None)
    rl, _ = recipe_config(args.recipes[0], args.seeds[0])
    base = make_policy(rl, load_pipeline(rl.generator))
    if args.split == "validation":
        prompts = select(
            prompts_of(fitting_reports(base, val, rl.max_report_tokens), args.data, "train"),
            args.prompts,
            0.5,
            1234,
        )
    else:
        prompts = held_out(fitting_reports(base, test, rl.max_report_tokens), args.heldout, args.data)
    backend = InProcessRewards(*scorers, weights=dict(PAPER_WEIGHTS), rlcf=False)
    features = feature_model(backend)  # the anchor's images need their features too, for the paired FID
    anchor = Evaluator(
        args.heldout, prompts, rl.sampling, backend, dict(PAPER_WEIGHTS), base, features
    ).anchor()
    results: dict[str, list[dict]] = {}
    for name in args.recipes:
        for seed in args.seeds:
            results.setdefault(name, []).append(
                curve(name, seed, args, train, prompts, scorers, anchor, features)
            )
    heldout = {"prompts": len(prompts), "samples": args.samples}
    report(results, args.split, args.budget, heldout, Path(args.out))


def report(results: dict[str, list[dict]], split: str, budget: float, heldout: dict, out: Path) -> None:
    """Summary (the first recipe's final mean gain as the target), learning.json, learning.png, a table."""
    first = next(iter(results.values()))
    target = float(np.mean([c["points"][-1]["diff"]["reward_total"]["value"] for c in first]))
    summary = {
        name: {
            "cpu_s_to_reach_first_final_gain": reach(cs, target),
            "final": {
                k: float(np.mean([c["points"][-1]["diff"][k]["value"] for c in cs]))
                for k in METRICS
                if all(k in c["points"][-1]["diff"] for c in cs)  # FID needs --data's real images
            },
        }
        for name, cs in results.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "split": split,
        "budget_cpu_s": budget,
        "target": target,
        "summary": summary,
        "heldout": heldout,
        "curves": results,
    }
    (out / "learning.json").write_text(json.dumps(doc, indent=1))
    plot(results, out / "learning.png")
    print(
        f"split {split}, {heldout['prompts']} reports x {heldout['samples']}; target = {next(iter(results))}'s final mean gain {target:+.3f}"
    )
    for name, s in summary.items():
        f = s["final"]
        print(
            f"{name:40s} final Δ total {f['reward_total']:+.3f}  AUROC {f['auroc']:+.4f}  CLIP {f['clip_similarity']:+.4f}"
            f"  reaches target at {s['cpu_s_to_reach_first_final_gain']} CPU-s"
        )


if __name__ == "__main__":
    main()
