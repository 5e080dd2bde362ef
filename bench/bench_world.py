"""World rendering speed: images per second on one core, and a small end-to-end build.

    python -m bench.bench_world --out out/bench [--size 256] [--n 120] [--build 240]

1. Render ``--n`` images in this process with one torch thread (the mask set is
   loaded first and not timed), each with the findings of a real IU report, and time
   rendering alone and rendering + PNG encoding. Prints images/s on one core.
2. Build a world of ``--build`` images with the real builder (2 workers, as the
   default world is built) and time it; prints the projected time of the 6,000-image
   default world from the measured rate and its ratio to the 3-minute target.

CPU contention from other processes lowers the wall-clock numbers; the CPU time per
image (one torch thread, so one core) does not depend on it and gives the rate of an
idle core. The JSON records the load average at the start so runs can be compared. Writes ``bench_world.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from cxrl.log import setup_logging

DEFAULT_WORLD = 6000
TARGET_S = 180.0


def render_rate(size: int, n: int) -> dict[str, float]:
    from cxrl.imaging import encode_png
    from cxrl.world.build import WorldConfig, _init_worker, make_jobs, plan_draws
    from cxrl.world.render import Renderer

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    renderer = Renderer(size)
    load_s = time.perf_counter() - t0
    jobs, _ = make_jobs(WorldConfig(n_train=n, n_test=0, size=size))
    _init_worker(renderer)
    render_s = encode_s = 0.0
    cpu0 = time.process_time()
    for job in jobs:
        t = time.perf_counter()
        rng, mask, psi, draws = plan_draws(job, 0, renderer.n_masks)
        out = renderer.render(mask, draws, psi, rng)
        t2 = time.perf_counter()
        encode_png(torch.from_numpy(out.image)[None])
        render_s += t2 - t
        encode_s += time.perf_counter() - t2
    cpu_s = time.process_time() - cpu0  # one torch thread: CPU time of this one core
    return {
        "cpu_ms_per_image": 1000 * cpu_s / n,
        "cpu_img_per_s": n / cpu_s,
        "mask_set_load_s": load_s,
        "render_img_per_s": n / render_s,
        "render_and_png_img_per_s": n / (render_s + encode_s),
        "ms_per_image": 1000 * (render_s + encode_s) / n,
    }


def build_rate(size: int, n: int) -> dict[str, float]:
    from cxrl.world.build import WorldConfig, build_world

    with tempfile.TemporaryDirectory() as tmp:
        n_test = max(1, n // 6)
        summary = build_world(
            Path(tmp) / "w",
            WorldConfig(n_train=n - n_test, n_test=n_test, size=size, workers=2),
            progress=False,
        )
    projected = DEFAULT_WORLD / summary["images_per_second"] + (
        summary["total_seconds"] - summary["render_seconds"]
    )
    return {
        "build_images": n,
        "build_total_s": summary["total_seconds"],
        "build_render_img_per_s": summary["images_per_second"],
        "projected_default_world_s": projected,
        "projected_over_target": projected / TARGET_S,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for bench_world.json")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--n", type=int, default=120, help="images rendered on one core")
    ap.add_argument("--build", type=int, default=240, help="images in the timed 2-worker build (0 = skip)")
    args = ap.parse_args()
    setup_logging("WARNING")
    result: dict = {"size": args.size, "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    result.update(render_rate(args.size, args.n))
    print(
        f"one core, {args.size} px: {result['render_img_per_s']:.1f} img/s rendering, "
        f"{result['render_and_png_img_per_s']:.1f} img/s with PNG encoding ({result['ms_per_image']:.1f} ms/img)"
    )
    if args.build:
        result.update(build_rate(args.size, args.build))
        print(
            f"2-worker build of {args.build} images: {result['build_total_s']:.1f} s "
            f"({result['build_render_img_per_s']:.1f} img/s); projected 6,000-image world "
            f"{result['projected_default_world_s']:.0f} s = {result['projected_over_target']:.2f} x the 180 s target"
        )
    cpu_projection = DEFAULT_WORLD * result["cpu_ms_per_image"] / 1000 / 2
    result["projected_default_world_render_s_idle_2_cores"] = cpu_projection
    print(
        f"CPU time: {result['cpu_ms_per_image']:.1f} ms/img = {result['cpu_img_per_s']:.1f} img/s per idle core; "
        f"6,000 images on 2 idle cores: {cpu_projection:.0f} s of rendering"
    )
    print(f"load average at start: {result['load_average']:.1f} on {result['cpus']} CPUs")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_world.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    print(path)


if __name__ == "__main__":
    main()
