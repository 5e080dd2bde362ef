"""bench.procmem: /proc parsing, process roles, tree peaks, and a live monitor over a child process."""

import subprocess
import sys

import pytest

from bench.procmem import MB, TreeMonitor, TreePeaks, parse_pss, parse_status, read_tree, role

STATUS = """Name:\tpython
VmPeak:\t 2000000 kB
VmHWM:\t  900000 kB
VmRSS:\t  512000 kB
Threads:\t4
"""


def test_parse_status_and_pss():
    assert parse_status(STATUS) == {"VmHWM": 900000 * 1024, "VmRSS": 512000 * 1024}
    assert parse_status("Name:\tkthreadd\nState:\tS\n") == {}
    rollup = "55a0-7ff [rollup]\nRss:  641328 kB\nPss:  381895 kB\nPss_Dirty: 1 kB\n"
    assert parse_pss(rollup) == 381895 * 1024
    assert parse_pss("Rss: 1 kB\n") is None
    with pytest.raises(ValueError, match="unit"):
        parse_status("VmRSS:\t 5 MB\n")


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("ray::ServeReplica:posture:PostureModel", "replica:posture"),
        ("ray::ServeReplica:reward:RewardGateway.handle_request", "replica:reward"),
        ("ray::SERVE_REPLICA::diagnostic#DiagnosticModel#av54:ServeReplica", "replica:diagnostic"),
        ("ray::ServeController.listen_for_change", "serve_controller"),
        ("ray::ProxyActor", "serve_proxy"),
        ("ray::IDLE", "ray_worker"),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp", "ray_gcs"),
        ("/venv/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=x", "ray_raylet"),
        ("/venv/bin/python /venv/site-packages/ray/dashboard/dashboard.py --host=127.0.0.1", "ray_daemon"),
        ("/venv/bin/redis-server *:6379", "redis"),
        ("/venv/bin/python -m cxrl.cli serve --config serve.yaml", "main"),
    ],
)
def test_role(cmdline, expected):
    assert role(cmdline) == expected


def test_tree_peaks_keep_maxima_and_the_specific_role():
    peaks = TreePeaks()
    mb = lambda n: n * MB  # noqa: E731
    peaks.add_sample(
        [
            (1, "main", {"VmRSS": mb(100), "VmHWM": mb(150)}, mb(80)),
            (2, "ray_worker", {"VmRSS": mb(300), "VmHWM": mb(300)}, None),
        ]
    )
    peaks.add_sample(
        [
            (1, "main", {"VmRSS": mb(120), "VmHWM": mb(150)}, mb(90)),
            (2, "replica:posture", {"VmRSS": mb(500), "VmHWM": mb(600)}, mb(200)),
            (3, "replica:diagnostic", {"VmRSS": mb(50), "VmHWM": mb(50)}, mb(40)),
        ]
    )
    peaks.add_sample([(2, "ray_worker", {"VmRSS": mb(10), "VmHWM": mb(10)}, mb(5))])
    s = peaks.summary()
    assert s["peak_tree_rss_mb"] == 670.0  # 120 + 500 + 50 in the second sample
    assert s["peak_tree_pss_mb"] == 380.0  # 80 + 300 (RSS where PSS is unknown) in the first
    assert s["max_process_rss_mb"] == 600.0
    assert s["max_replica_rss_mb"] == 600.0
    assert s["replica_processes"] == 2  # pid 2 stays a replica when its title goes generic
    assert s["processes_seen"] == 3 and s["samples"] == 3
    assert s["peak_rss_mb_by_role"] == {"main": 150.0, "replica:diagnostic": 50.0, "replica:posture": 600.0}


def test_monitor_sees_a_child_and_its_memory():
    code = (
        "import time; block = bytearray(64 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(3)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        with TreeMonitor(interval_s=0.1) as mon:
            child.wait(30)
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
    summary = mon.peaks.summary()
    assert summary["processes_seen"] >= 2 and summary["samples"] >= 2
    # the child touched 64 MB, so its peak RSS (hence the largest "main"-role process) is above that
    assert max(p.hwm for p in mon.peaks.procs.values() if p.pid == child.pid) > 64 * MB
    assert read_tree(child.pid) == []  # gone: nothing to read
