"""Named network namespaces and the processes in them, through iproute2 and /proc."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; failures raise with ip's own message, which says what was wrong."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def exists(ns: str) -> bool:
    """True if the named namespace is mounted under /run/netns."""
    return (NETNS_DIR / ns).exists()


def names(prefix: str = "") -> list[str]:
    """Named namespaces starting with `prefix`, so `down --all` touches only ours."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def create(ns: str) -> None:
    """Create the namespace with only `lo`, up: no link to the outside."""
    run_ip("netns", "add", ns)
    run_ip("-n", ns, "link", "set", "lo", "up")


def delete(ns: str) -> None:
    """Unmount the namespace name (processes still inside keep it alive: kill them first)."""
    if exists(ns):
        run_ip("netns", "del", ns, check=False)


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (what `ip netns pids` reports)."""
    if not exists(ns):
        return []
    proc = run_ip("netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def netns_inode(pid: int | str) -> int | None:
    """The inode of a process's network namespace, or None if it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def init_ns_path(kind: str = "net") -> str:
    """/proc path of the machine's initial namespace of `kind` ("net", "mnt", ...).

    PID 1's, or kthreadd's (PID 2) when PID 1's entries cannot be opened: on some machines PID 1
    is an agent whose /proc entries even root cannot open, while kernel threads always live in
    the initial namespaces.
    """
    for pid in (1, 2):
        path = f"/proc/{pid}/ns/{kind}"
        try:
            os.stat(path)
        except OSError:
            continue
        return path
    return f"/proc/1/ns/{kind}"


def root_netns_path() -> str:
    """A /proc path of the root network namespace."""
    return init_ns_path("net")


def root_inode() -> int | None:
    """The root network namespace's inode."""
    try:
        return os.stat(root_netns_path()).st_ino
    except OSError:
        return None


def in_root_netns() -> bool:
    """True when this process runs in the root network namespace (or it cannot be told)."""
    root = root_inode()
    return root is None or netns_inode("self") == root


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """`ip netns exec NS ARGV...`: runs argv inside the namespace (and a private /sys view)."""
    return ["ip", "netns", "exec", ns, *argv]


def netns_inode_of_name(ns: str) -> int | None:
    """The inode of a named namespace (to tell live lab namespaces from deleted ones)."""
    try:
        return os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return None
