"""cxrl.infra.procs: children die with a SIGKILLed parent; listeners read from /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

from cxrl.infra.procs import Listener, _alive, listening_sockets

PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from cxrl.infra.procs import FateShare, die_with_parent
    mode = sys.argv[1]
    fate = FateShare().start() if mode == "fate" else None
    kw = {"preexec_fn": die_with_parent} if mode == "pdeathsig" else {}
    pids = []
    # a child in its own session (as Ray and redis are started): a group kill would miss it
    pids.append(subprocess.Popen(["sleep", "300"], start_new_session=True, **kw).pid)
    # a grandchild, through a shell that exits: reparented to init
    sh = subprocess.Popen(["sh", "-c", "sleep 301 & echo $!"], stdout=subprocess.PIPE, text=True, **kw)
    pids.append(int(sh.stdout.readline()))
    sh.wait()
    if mode == "fate":  # a child whose environment lacks the token (as redis-server's title rewrite)
        pids.append(subprocess.Popen(["sleep", "302"], env={}, start_new_session=True).pid)
        fate.track_children()
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(300)
    """
)


def _run_and_kill_parent(mode: str) -> list[int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert pids and all(_alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def test_everything_started_after_fate_share_dies_with_a_sigkilled_parent():
    assert _run_and_kill_parent("fate") == []


def test_without_it_children_outlive_a_sigkilled_parent():
    left = _run_and_kill_parent("plain")
    try:
        assert len(left) == 2  # the attack is real: both sleeps were orphaned
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)


def test_pdeathsig_kills_a_direct_child_with_its_parent():
    left = _run_and_kill_parent("pdeathsig")
    try:  # the direct child dies with the parent; the shell's orphan is beyond PDEATHSIG
        assert len(left) == 1
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)


def test_listening_sockets_read_from_proc():
    with socket.socket() as lo, socket.socket(socket.AF_INET6) as any6, socket.socket() as other:
        lo.bind(("127.0.0.1", 0))
        lo.listen()
        any6.bind(("::", 0))
        any6.listen()
        other.bind(("127.0.0.1", 0))  # bound, not listening: not a listener
        found = {x.port: x for x in listening_sockets([os.getpid()])}
        assert found[lo.getsockname()[1]].address == "127.0.0.1" and found[lo.getsockname()[1]].loopback
        assert found[any6.getsockname()[1]].address == "::" and not found[any6.getsockname()[1]].loopback
        assert other.getsockname()[1] not in found
    assert Listener(1, "::ffff:127.0.0.1", 1).loopback and not Listener(1, "0.0.0.0", 1).loopback


def test_a_reaper_whose_owner_is_gone_before_it_starts_kills_nothing_else():
    """The owner exits at once: the reaper must not mistake init (or anyone) for its owner."""
    bystander = subprocess.Popen(["sleep", "120"])
    code = "import os; from cxrl.infra.procs import FateShare; FateShare().start(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    time.sleep(8)  # the reaper starts, finds its pipe closed, sweeps its own token only
    try:
        assert bystander.poll() is None
    finally:
        bystander.kill()
