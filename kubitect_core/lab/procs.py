"""Stopping a lab's processes by PID: what its namespace holds, and marked leftovers of a crash."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from kubitect_core.lab import netns


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def protected() -> set[int]:
    """This process and its ancestors: never killed, even when run from inside the lab."""
    out: set[int] = set()
    pid: int | None = os.getpid()
    while pid and pid not in out:
        out.add(pid)
        pid = _ppid(pid)
    out.add(1)
    return out


def marker_of(pid: int, marker_env: str) -> str | None:
    """The value of the lab marker variable in a process's environment, if it has one."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    key = marker_env.encode() + b"="
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode(errors="replace")
    return None


def all_pids() -> list[int]:
    """Every PID on the machine (from /proc)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def stray_marked(marker_env: str, match, live_namespaces: set[int]) -> list[int]:
    """Marked processes (marker value accepted by `match`) outside the root and every live lab namespace.

    Why: `ip netns del` does not kill what runs in the namespace; after a crash such processes
    hold a namespace nobody can name any more. The marker is how we know they are ours.
    """
    root = netns.root_inode()
    keep = protected()
    out = []
    for pid in all_pids():
        if pid in keep:
            continue
        value = marker_of(pid, marker_env)
        if value is None or not match(value):
            continue
        ino = netns.netns_inode(pid)
        if ino is None or ino == root or ino in live_namespaces:
            continue
        out.append(pid)
    return out


def terminate(pids: list[int], grace: float = 3.0) -> list[int]:
    """SIGTERM the top processes of `pids`, then SIGKILL whatever is left after `grace` seconds.

    Only the tops get SIGTERM first so that parents (systemd-nspawn, libvirtd) shut their
    children down in order; a container's systemd (a top when nspawn runs outside the
    namespace) gets SIGRTMIN+4, its poweroff request, since it ignores SIGTERM. The rest are
    killed if still alive. Returns the PIDs signalled.
    """
    keep = protected()
    targets = [p for p in dict.fromkeys(pids) if p not in keep and alive(p)]
    if not targets:
        return []
    tset = set(targets)
    tops = [p for p in targets if _ppid(p) not in tset]
    for pid in tops:
        _signal(pid, signal.SIGRTMIN + 4 if _comm(pid) == "systemd" else signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.05)
    left = [p for p in targets if alive(p)]
    for pid in left:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in left):
        time.sleep(0.02)
    return targets


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
