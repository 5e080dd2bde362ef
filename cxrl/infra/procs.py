"""Processes we start die with us, and what they listen on, read from /proc (Linux).

- ``die_with_parent``: a ``preexec_fn`` for ``subprocess.Popen`` — the kernel SIGKILLs the child
  when the process that started it dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``).
- ``FateShare``: for children we do not start ourselves (Ray's GCS, raylet, dashboard agent and
  workers, a redis-server started by a library): every process started after ``FateShare.start()``
  inherits a token in its environment (``CXRL_FATE_SHARE``), and a small reaper process, started
  first, waits on a pipe from us and notes every descendant of ours every ``SNAPSHOT_S`` seconds.
  When we die — however — the pipe closes and the reaper SIGKILLs every process it noted (checked
  by start time) and every process still carrying the token. Both are needed: a process that
  rewrites its environment block (redis-server and Ray's agents set their titles over it) cannot
  be found by token, and when we die the kernel SIGKILLs Ray's GCS and raylet at once (Ray's own
  PR_SET_PDEATHSIG), so their children are orphans before anyone could walk our tree.
  On a clean exit it finds none.
- ``listening_sockets``: the TCP sockets in LISTEN state that a set of processes holds, with their
  addresses (from ``/proc/<pid>/fd`` socket inodes and ``/proc/<pid>/net/tcp{,6}``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

FATE_ENV = "CXRL_FATE_SHARE"  # space-separated tokens; a process dies with every owner it names
SNAPSHOT_S = 1.0  # how often the reaper notes its owner's descendants
PR_SET_PDEATHSIG = 1
TCP_LISTEN = "0A"


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:  # the parent died before the prctl: nobody will signal us
        os.kill(os.getpid(), signal.SIGKILL)


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_sharing(token: str) -> list[int]:
    """Live processes (but this one) whose ``CXRL_FATE_SHARE`` names ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = _environ(int(entry.name))
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(FATE_ENV.encode() + b"=") and token.encode() in item.split(b"=", 1)[1].split():
                if _alive(int(entry.name)):
                    found.append(int(entry.name))
                break
    return found


def kill_sharing(token: str, grace_s: float = 0.0) -> list[int]:
    """SIGKILL (after SIGTERM and ``grace_s`` when given) every process that shares ``token``."""
    pids = processes_sharing(token)
    if grace_s and pids:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
    for _ in range(3):  # a dying raylet may still start a worker: sweep again
        for pid in processes_sharing(token):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    return pids


class FateShare:
    """Everything started after ``start()`` dies with this process, even when it is SIGKILLed.

    ``start()`` starts the reaper and adds a fresh token to ``os.environ[CXRL_FATE_SHARE]`` (so
    children inherit it); ``close()`` (or the end of a ``with`` block) lets the reaper sweep now.
    """

    def __init__(self, grace_s: float = 2.0):
        self.token = uuid.uuid4().hex
        self.grace_s = grace_s  # SIGTERM first, SIGKILL after this many seconds
        self._reaper: subprocess.Popen | None = None

    def start(self) -> FateShare:
        if self._reaper is not None:
            return self
        me = os.getpid()  # the owner, named here: the reaper may start after we are gone
        cmd = [
            sys.executable,
            "-m",
            "cxrl.infra.procs",
            self.token,
            str(self.grace_s),
            str(me),
            _start_time(me),
        ]
        self._reaper = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True
        )  # its own session: a Ctrl-C or a group kill meant for us does not stop it
        os.environ[FATE_ENV] = f"{os.environ.get(FATE_ENV, '')} {self.token}".strip()
        return self

    def track(self, pid: int) -> None:
        """Have the reaper kill ``pid`` too (checked by its start time, so a reused pid is spared)."""
        if self._reaper is None or not _alive(pid):
            return
        self._reaper.stdin.write(f"{pid} {_start_time(pid)}\n".encode())
        self._reaper.stdin.flush()

    def track_children(self) -> list[int]:
        """``track`` every live child of this process but the reaper; returns their pids."""
        mine = [pid for pid in children(os.getpid()) if self._reaper is None or pid != self._reaper.pid]
        for pid in mine:
            self.track(pid)
        return mine

    def close(self) -> None:
        """Sweep now: the reaper kills whatever still shares the token, and exits."""
        tokens = os.environ.get(FATE_ENV, "").split()
        if self.token in tokens:
            tokens.remove(self.token)
            os.environ[FATE_ENV] = " ".join(tokens)
        if self._reaper is not None:
            self._reaper.stdin.close()
            self._reaper.wait()
            self._reaper = None

    def __enter__(self) -> FateShare:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _reap(token: str, grace_s: float, owner: int, owner_start: str) -> None:
    """The reaper: note the owner's descendants until its pipe closes (it exited or was killed), then
    kill them and every process sharing ``token``. Descendants are noted only while the owner is
    the same live process (a dead owner's pid may belong to anyone, or its orphans to init)."""
    import select

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tracked, buf = {}, b""
    while True:
        if owner > 1 and _alive(owner) and _start_time(owner) == owner_start:
            tracked.update((pid, _start_time(pid)) for pid in descendants(owner) if pid != os.getpid())
        if not select.select([sys.stdin.buffer], [], [], SNAPSHOT_S)[0]:
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break  # the owner is gone
        buf += chunk
        *lines, buf = buf.split(b"\n")
        tracked.update((int(line.split()[0]), line.split()[1].decode()) for line in lines if line.strip())
    for pid, start in tracked.items():  # the same process, not a later one with its pid
        if pid > 1 and start and _alive(pid) and _start_time(pid) == start:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    kill_sharing(token, grace_s)


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str:
    try:
        return _stat_fields(pid)[19]  # field 22 of /proc/<pid>/stat: start time in clock ticks
    except (OSError, IndexError):
        return ""


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = _stat_fields(int(entry.name))
                if fields[0] != "Z":
                    out[int(entry.name)] = int(fields[1])
    return out


def children(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    return [child for child, parent in _parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """Live children, grandchildren, ... of ``pid``."""
    kids: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        kids.setdefault(parent, []).append(child)
    found, todo = [], list(kids.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(kids.get(found[-1], []))
    return found


# --- what listens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    pid: int
    address: str  # "127.0.0.1", "::", "0.0.0.0", ...
    port: int

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        mapped = getattr(ip, "ipv4_mapped", None)
        return (mapped or ip).is_loopback


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _parse_address(hex_addr: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(ip), int(port_hex, 16)


def listening_sockets(pids: list[int]) -> list[Listener]:
    """TCP sockets in LISTEN state held by ``pids``, with the address each is bound to."""
    found: list[Listener] = []
    for pid in pids:
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    cols = line.split()
                    if cols[3] == TCP_LISTEN and cols[9] in inodes:
                        found.append(Listener(pid, *_parse_address(cols[1])))
    return sorted(set(found), key=lambda x: (x.port, x.pid))


if __name__ == "__main__":  # the FateShare reaper: python -m cxrl.infra.procs TOKEN GRACE_S OWNER START
    _reap(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
