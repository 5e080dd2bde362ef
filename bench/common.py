"""What the service and trainer benchmarks share: the report workload and a `cxrl serve` to measure on."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from cxrl.infra.serve_process import TOKEN_ENV, ServeProcess
from services.cli import CONFIG_DIR

REPORTS = [
    "No acute cardiopulmonary process.",
    "Large right pleural effusion with adjacent atelectasis.",
    "Cardiomegaly with mild pulmonary edema.",
    "Small left apical pneumothorax.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Normal heart size. No focal consolidation, effusion or pneumothorax.",
    "Endotracheal tube and right internal jugular catheter in place. Bibasilar opacities.",
    "Hyperinflated lungs consistent with emphysema. No acute process.",
    "Mild cardiomegaly. No pleural effusion.",
]


def serve_config(path: Path, models: str, threads: int, replicas: int) -> None:
    """The CPU profile with ``models`` weights ("default"/"random"), ``threads`` and ``replicas`` per model."""
    data = yaml.safe_load((CONFIG_DIR / "serve-cpu.yaml").read_text())
    for app in data["applications"]:
        if app["name"] == "reward":
            continue
        app["args"].update(source=models, num_threads=threads)
        for dep in app["deployments"]:
            dep["num_replicas"] = replicas
    path.write_text(yaml.safe_dump(data))


@contextlib.contextmanager
def service(
    models: str,
    threads: int,
    replicas: int,
    workdir: Path,
    metrics: bool = True,
    token: str | None = None,
) -> Iterator[ServeProcess]:
    """``with service(...) as serve:`` a running ``cxrl serve`` (no score cache) on free ports; its API
    token is exported as CXRL_API_TOKEN, which the benchmark's clients and workers send.
    ``metrics=False``: what ``cxrl serve --no-metrics`` sets (no Ray metrics, no service metrics)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"serve-{replicas}.yaml"
    serve_config(config, models, threads, replicas)
    env: dict[str, str | None] = {"REDIS_URL": None}
    if not metrics:
        env.update({"RAY_enable_metrics_collection": "0", "CXRL_METRICS": "0"})
    serve = ServeProcess(
        config,
        workdir / f"serve-{replicas}.log",
        num_cpus=os.cpu_count(),
        env=env,
        ready_timeout_s=870,
        token=token,
    )
    t0 = time.monotonic()
    with serve:
        os.environ[TOKEN_ENV] = serve.token
        print(
            f"cxrl serve ({replicas} replica(s) per model) ready in {time.monotonic() - t0:.0f} s", flush=True
        )
        yield serve
        t0 = time.monotonic()
    print(f"cxrl serve stopped in {time.monotonic() - t0:.0f} s", flush=True)
