"""Real-size dry run on CPU: the paper preset at RoentGen's dimensions, cut to 2 images x 2 DDIM steps.

    python -m bench.bench_realsize --out out/bench            # ~20-30 min on 2 shared cores, < 10 GB
    python -m bench.bench_realsize --smoke --out out/smoke    # toy sizes, same path (minutes)

Everything is built offline from configs with random weights (:mod:`bench.realsize`): an SD-1.5
pipeline (UNet 860 M parameters, cross-attention 768, CLIP ViT-L/14-sized text encoder, 4-channel
VAE, 512 px) and the reward models at their real architectures and input sizes, served by
`cxrl serve` (CPU profile) as ``checkpoint`` sources. Then:

1. one ``paper``-preset epoch through the engine (:class:`cxrl.rl.engine.Engine`) with rewards over
   gRPC, cut to 2 images x 2 DDIM steps (guidance 5, anchors sampled, one optimiser step on both);
   LoRA on the UNet's real attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), ACE
   at width 768; the UNet recomputes activations in the backward pass (gradient checkpointing,
   ``--no-grad-checkpointing`` to switch off) so that 2 guided rows fit in memory;
2. the checkpoint it wrote, restored into a fresh engine over perturbed adapters: exact resume
   (LoRA, ACE, optimizer moments, RNG, stat tracker, step counters bit-identical);
3. the saved LoRA loaded into a plain diffusers ``StableDiffusionPipeline`` with
   ``load_lora_weights``: its UNet output matches the policy's (adapters on, no ACE);
4. memory: parameter bytes per component, the trainer's peak RSS before/after the epoch, each reward
   replica's peak RSS (``bench.procmem``); seconds per UNet call (sampling and training);
5. FLOP counts (``torch.utils.flop_counter`` on meta tensors) of every component per image, and from
   them a **projection** of one full paper-preset epoch (81 images x 50 steps) on a GPU at an assumed
   sustained throughput, next to the same FLOP model checked against this CPU run.

Writes ``bench_realsize.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import secrets
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from bench import realsize

GB = 2**30


def partial(directory: Path, out: dict) -> None:
    """What is measured so far (a long CPU run can be cut short)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench_realsize.partial.json").write_text(json.dumps(out, indent=2, default=str) + "\n")


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# -- FLOP counts ------------------------------------------------------------------------------------
def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def component_flops(pipe, ckpts: dict[str, Path], smoke: bool) -> dict[str, float]:
    """FLOPs per image (per report for text) of each component, counted on meta copies."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from cxrl.models.cxr_clip import ClipConfig, CXRClip
    from cxrl.models.posture import PostureConfig, PostureNet
    from cxrl.models.xrv_classifier import DiagnosticConfig, build_densenet

    res = pipe.unet.config.sample_size
    width = pipe.text_encoder.config.hidden_size
    out = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(pipe.unet.config).requires_grad_(False)
        x, t, e = torch.randn(1, 4, res, res), torch.tensor([500]), torch.randn(1, 77, width)
        with torch.no_grad():
            out["unet_forward_per_row"] = count_flops(lambda: unet(x, t, encoder_hidden_states=e))
        xg = x.clone().requires_grad_(True)  # frozen base: the backward computes input gradients only
        out["unet_forward_backward_per_row"] = count_flops(
            lambda: unet(xg, t, encoder_hidden_states=e).sample.sum().backward()
        )
        vae = AutoencoderKL.from_config(pipe.vae.config)
        with torch.no_grad():
            out["vae_decode_per_image"] = count_flops(lambda: vae.decode(torch.randn(1, 4, res, res)))
        text = CLIPTextModel(pipe.text_encoder.config)
        ids = torch.zeros(1, 77, dtype=torch.long)
        with torch.no_grad():
            out["text_encoder_per_report"] = count_flops(lambda: text(ids))
    with torch.no_grad():  # the reward models are small: counted on CPU, then dropped
        cfgs = {k: json.loads((p / "manifest.json").read_text())["config"] for k, p in ckpts.items()}
        posture = PostureNet(PostureConfig(**cfgs["posture"]))
        diag_cfg = DiagnosticConfig(**cfgs["diagnostic"])
        diag = build_densenet(diag_cfg, op_threshs=torch.full((18,), 0.5))
        clip = CXRClip(ClipConfig(**cfgs["clip"]))
        s, d, c = posture.cfg.input_size, diag_cfg.input_size, clip.cfg.image_size
        out["posture_per_image"] = count_flops(lambda: posture(torch.rand(1, 1, s, s)))
        out["diagnostic_per_image"] = count_flops(lambda: diag.features2(torch.rand(1, 1, d, d)))
        out["clip_image_per_image"] = count_flops(lambda: clip.image_encoder(torch.rand(1, 3, c, c)))
        tokens = {
            "input_ids": torch.zeros(1, 64, dtype=torch.long),
            "attention_mask": torch.ones(1, 64, dtype=torch.long),
        }
        out["clip_text_per_report"] = count_flops(lambda: clip.text_encoder(tokens))
    return out


def epoch_flops(
    f: dict[str, float], images: int, steps: int, cfg_rows: int, anchors: bool, ckpt_factor: float
):
    """FLOPs of one epoch by phase from per-image counts (``ckpt_factor``: recomputed forwards)."""
    rows = images * steps * cfg_rows
    decoded = images * (2 if anchors else 1)
    return {
        "sample_policy": rows * f["unet_forward_per_row"],
        "sample_anchor": rows * f["unet_forward_per_row"] if anchors else 0.0,
        "decode": decoded * f["vae_decode_per_image"],
        "text": images * f["text_encoder_per_report"],
        "train": rows * (f["unet_forward_backward_per_row"] + ckpt_factor * f["unet_forward_per_row"]),
        "rewards": decoded * (f["posture_per_image"] + f["diagnostic_per_image"] + f["clip_image_per_image"])
        + images * f["clip_text_per_report"],
    }


# -- memory -------------------------------------------------------------------------------------------
def module_bytes(module: torch.nn.Module, trainable: bool | None = None) -> int:
    return sum(
        p.numel() * p.element_size()
        for p in module.parameters()
        if trainable is None or p.requires_grad == trainable
    )


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def current_rss_gb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / GB
    return float("nan")


# -- checks -------------------------------------------------------------------------------------------
def exact_resume(engine, cfg, target: str, run_dir: Path) -> dict:
    """Restore the written checkpoint into a fresh engine over perturbed adapters; compare every state."""
    from cxrl.client import RewardClient
    from cxrl.rl.run import build

    policy = engine.policy
    params = [p.detach().clone() for p in policy.trainable_parameters()]
    opt_state = copy.deepcopy(engine.optimizer.state_dict())
    rng = engine.update.generator.get_state()
    tracker = engine.tracker.state_dict()
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(1.0)  # the fresh engine must bring the trained values back
    backend = RewardClient(target, weights=dict(cfg.rewards.weights))
    again = build(cfg, realsize.REPORTS, backend, policy=policy, run_dir=run_dir).engine
    try:
        resumed = again.resume()
        restored = again.optimizer.state_dict()
        same_opt = all(
            torch.equal(a[k], b[k])
            for a, b in zip(opt_state["state"].values(), restored["state"].values(), strict=True)
            for k in a
            if torch.is_tensor(a[k])
        )
        out = {
            "resumed": resumed,
            "epoch": again.epoch,
            "global_step_equal": again.global_step == engine.global_step,
            "adapters_equal": all(
                torch.equal(a, b) for a, b in zip(params, policy.trainable_parameters(), strict=True)
            ),
            "optimizer_equal": same_opt and len(opt_state["state"]) == len(restored["state"]),
            "rng_equal": torch.equal(rng, again.update.generator.get_state()),
            "stat_tracker_equal": again.tracker.state_dict() == tracker,
        }
    finally:
        again.close()
    out["exact"] = all(v for k, v in out.items() if k not in ("epoch",)) and out["epoch"] == engine.epoch
    return out


def lora_in_plain_diffusers(policy, pipe, checkpoint: Path) -> dict:
    """A plain StableDiffusionPipeline (sharing the frozen base weights) + ``load_lora_weights``."""
    from accelerate import init_empty_weights
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    base = {k.replace(".base_layer", ""): v for k, v in policy.unet.state_dict().items() if "lora_" not in k}
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(policy.unet.config)
    unet.load_state_dict(base, assign=True, strict=True)
    plain = StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=unet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    res = unet.config.sample_size
    x = torch.randn(1, 4, res, res, generator=torch.Generator().manual_seed(0))
    e = policy.encode_prompts(["Small left pleural effusion."])  # [1, 77, d]
    t = torch.tensor([500])
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=e).sample
        plain.load_lora_weights(str(checkpoint))
        after = unet(x, t, encoder_hidden_states=e).sample
        want = policy.unet(x, t, encoder_hidden_states=e).sample  # adapters on; ACE is not the UNet's
    lora_modules = sum(1 for n, _ in unet.named_modules() if n.endswith("lora_A"))
    diff = float((after - want).abs().max())
    return {
        "lora_modules_loaded": lora_modules,
        "max_abs_diff_vs_policy": diff,
        "lora_changed_output": float((after - before).abs().max()),
        "matches": diff <= 1e-4 * max(1.0, float(want.abs().max())),
    }


# -- the run ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    from bench.procmem import TreeMonitor
    from cxrl.infra.serve_process import ServeProcess
    from cxrl.rl.checkpoint import latest_checkpoint

    torch.set_num_threads(args.threads)
    out: dict = {"smoke": args.smoke, "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="cxrl-realsize-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        ckpts = realsize.reward_checkpoints(tmp / "rewards", smoke=args.smoke)
        config = realsize.serve_config(tmp / "serve.yaml", ckpts, "cpu", threads=1)
        pipe = realsize.sd_pipeline(smoke=args.smoke)
        out["build_s"] = time.perf_counter() - t0
        say(f"built the pipeline and reward checkpoints in {out['build_s']:.0f} s")
        out["params_m"] = {
            k: realsize.n_params(getattr(pipe, k)) / 1e6 for k in ("unet", "vae", "text_encoder")
        }
        flops = component_flops(pipe, ckpts, args.smoke)
        out["flops_per_item"] = flops
        partial(args.out, out)
        cfg = realsize.epoch_config(2, 2, 2, 1, "cpu")
        os.environ["CXRL_API_TOKEN"] = secrets.token_urlsafe(32)
        env = {"REDIS_URL": None, "CXRL_ALLOW_UNAUTHENTICATED": "1"}
        serve = ServeProcess(config, tmp / "serve.log", env=env, num_cpus=2)
        say("FLOPs counted; starting cxrl serve")
        with serve, TreeMonitor(serve.proc.pid) as services:
            say("cxrl serve ready; running the epoch")
            rss_before = current_rss_gb()

            def prepare(policy):
                if args.grad_checkpointing:
                    policy.unet.enable_gradient_checkpointing()

            engine, metrics, timer = realsize.run_paper_epoch(
                cfg, pipe, serve.grpc_target, tmp / "run", prepare=prepare, echo=not args.smoke
            )
            policy = engine.policy
            out["epoch"] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            out["unet_calls"] = timer.summary()
            timer.remove()
            out["memory_gb"] = {
                "unet_params": module_bytes(pipe.unet, trainable=False) / GB,
                "vae_params": module_bytes(pipe.vae) / GB,
                "text_encoder_params": module_bytes(pipe.text_encoder) / GB,
                "lora_params": module_bytes(policy.unet, trainable=True) / GB,
                "ace_params": module_bytes(policy.ace) / GB if policy.ace is not None else 0.0,
                "optimizer_state": sum(
                    t.numel() * t.element_size()
                    for s in engine.optimizer.state.values()
                    for t in s.values()
                    if torch.is_tensor(t)
                )
                / GB,
                "trainer_rss_before_epoch": rss_before,
                "trainer_peak_rss": peak_rss_gb(),
            }
            out["lora"] = {
                "targets": list(cfg.lora.targets),
                "wrapped_modules": sum(1 for n, _ in policy.unet.named_modules() if n.endswith("lora_A")),
                "example": next(n for n, _ in policy.unet.named_modules() if n.endswith("to_q")),
                "ace_shape": list(policy.ace.tokens.shape),
            }
            ckpt_dir = latest_checkpoint(tmp / "run" / "checkpoints")
            out["checkpoint_files"] = sorted(p.name for p in ckpt_dir.iterdir())
            say(f"epoch done in {metrics['time/epoch']:.0f} s; checking exact resume")
            partial(args.out, out)
            out["resume"] = exact_resume(engine, cfg, serve.grpc_target, tmp / "run")
            engine.close()
        out["services_memory_mb"] = services.peaks.summary()
        say("loading the LoRA into a plain diffusers pipeline")
        out["lora_plain_diffusers"] = lora_in_plain_diffusers(policy, pipe, ckpt_dir)
    out["projection"] = project(out, flops, cfg, args)
    return out


def project(out: dict, f: dict[str, float], cfg, args: argparse.Namespace) -> dict:
    """The FLOP model checked against this CPU run, then applied to the full paper epoch on a GPU."""
    from cxrl.rl.config import CXRLConfig

    paper = CXRLConfig.load("paper")
    rows = 2 if cfg.sampling.guidance_scale != 1.0 else 1
    ck = 1.0 if args.grad_checkpointing else 0.0
    here = epoch_flops(f, 2, cfg.sampling.num_steps, rows, True, ck)
    calls = out["unet_calls"]
    cpu_flops_s = f["unet_forward_per_row"] / calls["sample"]["cpu_s_per_row"]  # sampling calls, CPU time
    unet_here = here["sample_policy"] + here["sample_anchor"] + here["train"]
    full = epoch_flops(f, paper.sampling.images_per_epoch, paper.sampling.num_steps, rows, True, 0.0)
    warm = dict(full, sample_anchor=0.0, decode=full["decode"] / 2)
    sustained = args.gpu_tflops * 1e12 * args.gpu_utilisation
    return {
        "label": "PROJECTION from FLOP counts, not a measurement",
        "cpu_measured_unet_tflops_per_s": cpu_flops_s / 1e12,
        "cut_epoch_tflop": {k: v / 1e12 for k, v in here.items()},
        "cut_epoch_unet_s_predicted": unet_here / cpu_flops_s,  # forwards, backwards, recomputation
        # what the hooks time: every UNet forward (sampling and training), at the sampling calls' rate
        "cut_epoch_unet_forward_cpu_s_predicted": sum(c["calls"] * c["rows_per_call"] for c in calls.values())
        * f["unet_forward_per_row"]
        / cpu_flops_s,
        "cut_epoch_unet_cpu_s_measured": sum(c["cpu_s_per_call"] * c["calls"] for c in calls.values()),
        "cut_epoch_unet_wall_s_measured": sum(c["s_per_call"] * c["calls"] for c in calls.values()),
        "paper_epoch_tflop": {k: v / 1e12 for k, v in full.items()},
        "paper_epoch_tflop_total": sum(full.values()) / 1e12,
        "gpu_assumption": f"{args.gpu_tflops:g} TFLOP/s peak x {args.gpu_utilisation:g} utilisation "
        f"= {sustained / 1e12:.0f} TFLOP/s sustained (fp16 tensor cores; no gradient checkpointing)",
        "paper_epoch_gpu_s_cold_anchor": sum(full.values()) / sustained,
        "paper_epoch_gpu_s_cached_anchor": sum(warm.values()) / sustained,
    }


def report(out: dict) -> str:
    m, e, p = out["memory_gb"], out["epoch"], out["projection"]
    lines = [
        f"real-size dry run ({'smoke' if out['smoke'] else 'SD-1.5 sizes'}, {out['threads']} thread): "
        f"UNet {out['params_m']['unet']:.0f} M, VAE {out['params_m']['vae']:.0f} M, "
        f"text {out['params_m']['text_encoder']:.0f} M parameters; built in {out['build_s']:.0f} s",
        f"  epoch (2 images x 2 steps, guidance, anchors, 1 optimiser step): {e['time/epoch']:.0f} s "
        f"(sample {e['time/sample']:.0f}, anchor {e['time/anchor']:.0f}, train {e['time/train']:.0f}, "
        f"checkpoint {e['time/checkpoint']:.1f}); policy total {e['policy/total']:.3f}, loss {e['loss']:.2e}",
    ]
    if "train" in out["unet_calls"]:
        n = out["unet_calls"]["train"]["calls"]
        lines.append(
            f"  training, per UNet call incl. backward and recomputation: {e['time/train'] / n:.1f} s wall "
            "(the hook times below see the forward only)"
        )
    for kind, c in out["unet_calls"].items():
        lines.append(
            f"  UNet {kind} call: {c['s_per_call']:.1f} s wall, {c['cpu_s_per_call']:.1f} s CPU for "
            f"{c['rows_per_call']:.0f} rows ({c['calls']} calls)"
        )
    lines.append("  memory (GB): " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    roles = out["services_memory_mb"].get("peak_rss_mb_by_role", {})
    lines.append(
        "  reward replicas peak RSS (MB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in roles.items() if k.startswith("replica"))
    )
    lines.append(
        f"  LoRA on {out['lora']['wrapped_modules']} modules (e.g. {out['lora']['example']}), "
        f"ACE {out['lora']['ace_shape']}; checkpoint files {out['checkpoint_files']}"
    )
    lines.append(f"  exact resume: {out['resume']['exact']} ({out['resume']})")
    lines.append(f"  LoRA in plain diffusers via load_lora_weights: {out['lora_plain_diffusers']}")
    lines.append(
        f"  FLOP model vs this run: UNet forwards' CPU time predicted {p['cut_epoch_unet_forward_cpu_s_predicted']:.0f} s"
        f" (at the sampling calls' {p['cpu_measured_unet_tflops_per_s'] * 1e3:.0f} GFLOP per CPU second), measured "
        f"{p['cut_epoch_unet_cpu_s_measured']:.0f} s (wall {p['cut_epoch_unet_wall_s_measured']:.0f} s)"
    )
    lines.append(
        f"  {p['label']}: paper epoch = {p['paper_epoch_tflop_total']:.0f} TFLOP; at {p['gpu_assumption']}: "
        f"{p['paper_epoch_gpu_s_cold_anchor']:.0f} s (anchors sampled), "
        f"{p['paper_epoch_gpu_s_cached_anchor']:.0f} s (anchors cached)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for bench_realsize.json")
    p.add_argument("--smoke", action="store_true", help="toy sizes, same path")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    p.add_argument(
        "--no-grad-checkpointing",
        dest="grad_checkpointing",
        action="store_false",
        help="keep UNet activations for the backward (needs ~25 GB more at 512 px)",
    )
    p.add_argument(
        "--gpu-tflops",
        type=float,
        default=989.0,
        help="projection: GPU peak dense fp16 TFLOP/s (H100/H200 SXM 989, A100 312)",
    )
    p.add_argument("--gpu-utilisation", type=float, default=0.35, help="projection: sustained share of peak")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        out = run(args)
    except Exception:
        traceback.print_exc()
        print("real-size dry run FAILED", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_realsize.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(report(out))
    ok = out["resume"]["exact"] and out["lora_plain_diffusers"]["matches"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
