"""`cxrl serve` as a test fixture: start it on free loopback ports, find its processes, stop it cleanly.

Every process of one instance (the command, Ray's head processes, the Serve replicas) carries a
unique marker in its environment, so a test can measure their memory, find a replica to kill,
and check that nothing is left behind after shutdown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from cxrl.infra.ports import free_port
from services.cli import CONFIG_DIR


@dataclass
class Serve:
    grpc_target: str  # 127.0.0.1:PORT
    http_url: str  # http://127.0.0.1:PORT
    marker: str  # CXRL_TEST_MARKER=<uuid> in every process's environment
    log: Path


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


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


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
) -> Iterator[Serve]:
    """Run `cxrl serve --config CONFIG` (niced, 2 CPUs for Ray) until the block ends; then SIGINT it
    and check that it stopped cleanly and left no process behind."""
    marker = uuid.uuid4().hex
    http_port, grpc_port = free_port(), free_port()
    full_env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    full_env.pop("REDIS_URL", None)  # score uncached: every request reaches the models
    full_env.update(env or {}, CXRL_TEST_MARKER=marker)
    cmd = ["nice", "-n", "10", sys.executable, "-m", "cxrl.cli", "serve", "--config", str(config)]
    cmd += ["--num-cpus", "2", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    cmd += ["--ready-timeout", str(timeout_s)]
    with open(log, "w") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=full_env)
        try:
            wait_ready(proc, log, timeout_s + 30)
            yield Serve(
                f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", f"CXRL_TEST_MARKER={marker}", log
            )
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(180)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            deadline = time.monotonic() + 30
            while (left := processes_with(f"CXRL_TEST_MARKER={marker}")) and time.monotonic() < deadline:
                time.sleep(0.5)
            for pid in left:  # never leave Ray behind, even when the assertion below fails
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert rc == 0 and "cxrl serve: stopped" in text, f"unclean shutdown (rc={rc}):\n{text[-3000:]}"
    assert not left, f"processes left behind after shutdown: {left}"


def wait_ready(proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while "cxrl serve: ready" not in log.read_text():
        if proc.poll() is not None:
            raise RuntimeError(f"cxrl serve exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"cxrl serve not ready after {timeout_s} s:\n{log.read_text()[-5000:]}")
        time.sleep(1)
