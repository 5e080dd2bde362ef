"""`cxrl serve` in tests: the shared launcher (:mod:`cxrl.infra.serve_process`) as a checked fixture,
a random-weight serve config, and the memory and replica look-ups of one instance's processes
(found by the marker every process of an instance carries in its environment).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import yaml

from cxrl.infra.serve_process import ServeProcess, processes_with
from services.cli import CONFIG_DIR


def random_config(
    path: Path, gateway_args: dict | None = None, gateway_deployment: dict | None = None
) -> Path:
    """The CPU profile with random-weight models and overrides of the gateway's args/deployment."""
    data = yaml.safe_load((CONFIG_DIR / "serve-cpu.yaml").read_text())
    for app in data["applications"]:
        if app["name"] == "reward":
            app["args"].update(gateway_args or {})
            app["deployments"][0].update(gateway_deployment or {})
        else:
            app["args"].update(source="random", seed=0)
    path.write_text(yaml.safe_dump(data))
    return path


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes together (VmRSS)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def find_process(marker: str, title: str) -> int | None:
    """The process of this instance whose command line (Ray sets it to the actor name) holds ``title``."""
    for pid in processes_with(marker):
        with contextlib.suppress(OSError):
            if title.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


@contextlib.contextmanager
def serve(
    config: Path, log: Path, env: dict[str, str] | None = None, timeout_s: float = 780
) -> Iterator[ServeProcess]:
    """Run `cxrl serve --config CONFIG` (niced, 2 CPUs for Ray, no score cache) until the block ends;
    then stop it and check that it stopped cleanly and left no process behind."""
    env = {"REDIS_URL": None, **(env or {})}
    if "CXRL_API_TOKEN" not in env:  # no token given: unauthenticated on a test machine
        env["CXRL_ALLOW_UNAUTHENTICATED"] = "1"
    service = ServeProcess(config, log, num_cpus=2, nice=10, ready_timeout_s=timeout_s, env=env)
    with service:
        yield service
    assert service.stopped_cleanly, (
        f"unclean shutdown (rc={service.returncode}, processes left behind: {service.left}):\n"
        f"{service.log_tail(3000)}"
    )
