"""Peak memory of a process tree, read from /proc: the trainer, `cxrl serve` and its Ray workers.

A :class:`TreeMonitor` samples a root process and all its descendants every ``interval_s``
seconds in a background thread. Per process it keeps the kernel's own peak resident set
(``VmHWM`` in ``/proc/<pid>/status``, exact even between samples); for the whole tree it keeps
the peak of the summed current RSS and of the summed PSS (``/proc/<pid>/smaps_rollup``:
shared pages split between the processes that map them, so the sum does not count torch's
shared libraries once per Ray worker). Processes are grouped by role from their command line
(Ray sets titles such as ``ray::ServeReplica:posture:PostureModel``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MB = 2**20
RANK = {"main": 0, "ray_worker": 1, "replica": 2, "serve_controller": 2, "serve_proxy": 2}  # specificity


def parse_status(text: str) -> dict[str, int]:
    """``/proc/<pid>/status`` -> {"VmRSS": bytes, "VmHWM": bytes} (keys absent for kernel threads)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            value, unit = rest.split()
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {key} in /proc status")
            out[key] = int(value) * 1024
    return out


def parse_pss(text: str) -> int | None:
    """The ``Pss:`` line of ``/proc/<pid>/smaps_rollup`` in bytes (None when missing)."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for Pss in smaps_rollup")
            return int(value) * 1024
    return None


def role(cmdline: str) -> str:
    """A process's part in the service stack, from its command line (or Ray process title)."""
    if cmdline.startswith("ray::ServeReplica:"):  # ray::ServeReplica:<app>:<Deployment>[.method]
        return "replica:" + cmdline.split(":")[3]
    if "SERVE_REPLICA::" in cmdline:  # the same, in the form that some Ray versions use
        return "replica:" + cmdline.split("SERVE_REPLICA::", 1)[1].split("#", 1)[0]
    if cmdline.startswith("ray::ServeController"):
        return "serve_controller"
    if cmdline.startswith("ray::ProxyActor"):
        return "serve_proxy"
    if cmdline.startswith("ray::"):
        return "ray_worker"  # agents, idle workers, build tasks
    for marker, name in (("gcs_server", "ray_gcs"), ("raylet", "ray_raylet"), ("redis-server", "redis")):
        if marker in cmdline.split(" ", 1)[0]:
            return name
    if "ray/dashboard" in cmdline or "log_monitor" in cmdline or "autoscaler" in cmdline:
        return "ray_daemon"
    return "main"


@dataclass
class ProcPeak:
    pid: int
    role: str
    hwm: int = 0  # peak RSS in bytes (VmHWM)


@dataclass
class TreePeaks:
    """What a monitor saw; sizes in bytes."""

    procs: dict[int, ProcPeak] = field(default_factory=dict)
    peak_rss_sum: int = 0
    peak_pss_sum: int = 0
    samples: int = 0

    def add_sample(self, rows: list[tuple[int, str, dict[str, int], int | None]]) -> None:
        """One sample: (pid, role, parsed status, pss) for every live process of the tree."""
        rss_sum = pss_sum = 0
        for pid, name, status, pss in rows:
            peak = self.procs.setdefault(pid, ProcPeak(pid, name))
            if RANK.get(name.split(":")[0], 1) >= RANK.get(peak.role.split(":")[0], 1):
                peak.role = name  # a Ray worker takes its title after it starts; keep the most specific
            peak.hwm = max(peak.hwm, status.get("VmHWM", 0), status.get("VmRSS", 0))
            rss_sum += status.get("VmRSS", 0)
            pss_sum += pss if pss is not None else status.get("VmRSS", 0)
        self.peak_rss_sum = max(self.peak_rss_sum, rss_sum)
        self.peak_pss_sum = max(self.peak_pss_sum, pss_sum)
        self.samples += 1

    def summary(self) -> dict:
        """MB figures: tree totals, the largest process of each role, and the replicas' peak."""
        by_role: dict[str, float] = {}
        for p in self.procs.values():
            by_role[p.role] = max(by_role.get(p.role, 0.0), p.hwm / MB)
        replicas = [p.hwm / MB for p in self.procs.values() if p.role.startswith("replica:")]
        return {
            "peak_tree_rss_mb": round(self.peak_rss_sum / MB, 1),
            "peak_tree_pss_mb": round(self.peak_pss_sum / MB, 1),
            "max_process_rss_mb": round(max((p.hwm for p in self.procs.values()), default=0) / MB, 1),
            "max_replica_rss_mb": round(max(replicas, default=0.0), 1),
            "replica_processes": len(replicas),
            "processes_seen": len(self.procs),
            "samples": self.samples,
            "peak_rss_mb_by_role": {k: round(v, 1) for k, v in sorted(by_role.items())},
        }


def read_tree(root: int) -> list[tuple[int, str, dict[str, int], int | None]]:
    """(pid, role, status, pss) of ``root`` and its live descendants; vanished ones are skipped."""
    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    rows = []
    for proc in procs:
        base = Path("/proc") / str(proc.pid)
        try:
            cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = parse_status((base / "status").read_text())
            try:
                pss = parse_pss((base / "smaps_rollup").read_text())
            except OSError:
                pss = None
        except (OSError, ProcessLookupError):
            continue
        rows.append((proc.pid, role(cmdline.strip()), status, pss))
    return rows


class TreeMonitor:
    """``with TreeMonitor(pid) as mon: ...`` then ``mon.peaks.summary()``; samples in a thread."""

    def __init__(self, root: int | None = None, interval_s: float = 0.5):
        self.root = root if root is not None else os.getpid()
        self.interval_s = interval_s
        self.peaks = TreePeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-monitor", daemon=True)

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        rows = read_tree(self.root)
        if rows:
            self.peaks.add_sample(rows)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
