"""The machine-side facts the nspawn provider depends on: names, namespaces, processes, commands.

Everything here is about the local machine (the one kubitect runs on): which network namespace
we are in, how our objects are named so they can be found again without a record, and how to
find and stop the systemd-nspawn processes we started.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from pathlib import Path

from kubitect_core.sdk.netns import in_root_netns, init_ns_path

ALLOW_ROOT_NETNS_ENV = "KUBITECT_ALLOW_ROOT_NETNS"
NODE_MARK_ENV = "KUBITECT_NSPAWN_NODE"  # "<cluster id>/<node name>" in each systemd-nspawn's environ
SPEC_MARK_ENV = "KUBITECT_NSPAWN_SPEC"  # hash of the node spec the container was started with


class NspawnError(Exception):
    """The nspawn provider cannot do what was asked; the message says what to do instead."""


def cluster_id(cluster_dir: Path) -> str:
    """8 hex digits naming this cluster's objects on the machine (bridge, process markers).

    Derived from the cluster directory, so two homes with a cluster of the same name (tests,
    two users) never share a bridge or mistake each other's containers.
    """
    return hashlib.sha256(str(Path(cluster_dir).resolve()).encode()).hexdigest()[:8]


def bridge_name(cluster_dir: Path) -> str:
    """The cluster bridge: `kb-<hash8>`, 11 characters (Linux allows 15)."""
    return f"kb-{cluster_id(cluster_dir)}"


def root_netns_refusal() -> str | None:
    """Why we must not touch this network namespace, or None when it is safe.

    Bridges and addresses in the machine's root namespace would change the host's networking;
    that takes an explicit opt-in. Compares /proc/self/ns/net with the initial namespace.
    """
    if not in_root_netns() or os.environ.get(ALLOW_ROOT_NETNS_ENV) == "1":
        return None
    return (
        "the nspawn provider would create a bridge and addresses in this machine's root network "
        "namespace; run kubitect inside a lab namespace (`kubitect lab exec NAME -- kubitect ...`), "
        f"or set {ALLOW_ROOT_NETNS_ENV}=1 to allow it on purpose"
    )


def nspawn_prefix() -> list[str]:
    """argv prefix so systemd-nspawn sees the cgroup hierarchy.

    `ip netns exec` mounts a fresh /sys for the namespace, which hides /sys/fs/cgroup, and
    systemd-nspawn then fails ("Failed to determine whether the unified cgroups hierarchy is
    used"). Entering PID 1's mount namespace (and only that: the network namespace stays ours)
    gives it the machine's /sys/fs/cgroup back.
    """
    cg = Path("/sys/fs/cgroup")
    if (cg / "cgroup.controllers").exists() or (cg / "systemd").is_dir() or (cg / "unified").is_dir():
        return []
    init_mnt = init_ns_path("mnt")
    with contextlib.suppress(OSError):
        if os.stat("/proc/self/ns/mnt").st_ino != os.stat(init_mnt).st_ino:
            return ["nsenter", f"--mount={init_mnt}", "--"]
    return []


async def sh(*argv: str, check: bool = True, input: bytes | None = None,
             timeout: float = 60.0) -> tuple[int, str, str]:
    """Runs a short command; a failure (check=True) raises NspawnError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NspawnError(f"`{' '.join(argv[:6])}` timed out after {timeout:g}s") from None
    rc = proc.returncode if proc.returncode is not None else -1
    if check and rc != 0:
        raise NspawnError(f"`{' '.join(argv[:8])}` exited {rc}: {err.decode(errors='replace').strip()}")
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


# --------------------------------------------------------------------------- processes


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int | None) -> bool:
    """True when `pid` runs (a zombie of our own is reaped and counts as dead)."""
    if not pid:
        return False
    _reap(pid)
    return _state(pid) not in ("Z", "X")


def marker(cid: str, node: str) -> str:
    return f"{cid}/{node}"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def node_process(pid: int | None, cid: str, node: str) -> bool:
    """True when `pid` is alive and is the systemd-nspawn of this cluster's `node` (not a reused PID)."""
    return (is_alive(pid) and _comm(pid or 0) == "systemd-nspawn"
            and f"{NODE_MARK_ENV}={marker(cid, node)}".encode() in _environ(pid or 0))


def spec_of(pid: int) -> str | None:
    """The spec hash a running container was started with (from its environment)."""
    prefix = f"{SPEC_MARK_ENV}=".encode()
    for item in _environ(pid):
        if item.startswith(prefix):
            return item[len(prefix):].decode()
    return None


def marked_processes(cid: str) -> dict[str, list[int]]:
    """Live processes carrying cluster `cid`'s marker, by node name.

    The marker is in each systemd-nspawn's environment and (through `--setenv`) in the
    container's init, so a container whose systemd-nspawn was killed is still found.
    """
    prefix = f"{NODE_MARK_ENV}={cid}/".encode()
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        for item in _environ(pid):
            if item.startswith(prefix) and is_alive(pid):
                found.setdefault(item[len(prefix):].decode(), []).append(pid)
                break
    return found


def find_nodes(cid: str) -> dict[str, int]:
    """Running containers of cluster `cid` by node name: the PID of their systemd-nspawn."""
    out = {}
    for node, pids in marked_processes(cid).items():
        for pid in pids:
            if _comm(pid) == "systemd-nspawn":
                out[node] = pid
    return out


async def kill_orphans(cid: str, node: str | None = None) -> list[int]:
    """SIGKILLs container inits left behind by a killed systemd-nspawn (by marker, by PID).

    Killing a PID namespace's init ends every process in it, which frees the container's
    network namespace and its veth on the bridge.
    """
    killed = []
    for name, pids in marked_processes(cid).items():
        if node is not None and name != node:
            continue
        for pid in pids:
            if _comm(pid) != "systemd-nspawn":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
    for _ in range(50):
        if not any(is_alive(p) for p in killed):
            break
        await asyncio.sleep(0.1)
    return killed


def leader_of(pid: int) -> int | None:
    """The container's PID 1 (as seen from here) once it runs systemd, else None."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
        except OSError:
            continue
    return None


async def stop_process(pid: int, *, grace: float = 10.0) -> bool:
    """SIGTERM (a clean container shutdown takes ~2 s), SIGKILL after `grace`; True if it was alive."""
    if not is_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not is_alive(pid):
            break
        await asyncio.sleep(0.1)
    return True


# With --keep-unit and no registration, systemd-nspawn hands the container the cgroup it was
# started in. Started side by side from one cgroup, the nodes' systemds would all manage the
# same cgroup tree and remove each other's unit cgroups ("status=219/CGROUP": a unit, e.g. the
# setup unit or systemd-user-sessions, fails at random under load). So each node lives in a
# cgroup of its own, kubitect/<node>, in every hierarchy systemd uses (named by _CGROUP_ROOTS).
_CGROUP_ROOTS = r"""roots() {
  for r in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do [ -d "$r" ] && echo "$r"; done
  [ -f /sys/fs/cgroup/cgroup.controllers ] && echo /sys/fs/cgroup
}
m=$1; shift
"""
_OWN_CGROUP_SCRIPT = _CGROUP_ROOTS + r"""for root in $(roots); do
  mkdir -p "$root/kubitect/$m" && echo $$ > "$root/kubitect/$m/cgroup.procs"
done
exec "$@"
"""
_REMOVE_CGROUP_SCRIPT = _CGROUP_ROOTS + r"""for root in $(roots); do
  [ -d "$root/kubitect/$m" ] && find "$root/kubitect/$m" -depth -type d -exec rmdir {} + 2>/dev/null
done
true
"""


def own_cgroup_argv(name: str) -> list[str]:
    """argv prefix that moves the command into the node's own cgroups, then execs it."""
    return ["sh", "-c", _OWN_CGROUP_SCRIPT, "kubitect-nspawn", name]


async def remove_cgroups(name: str) -> None:
    """Removes a stopped node's own cgroups (empty directories; a live one is left alone)."""
    await sh(*nspawn_prefix(), "sh", "-c", _REMOVE_CGROUP_SCRIPT, "kubitect-nspawn", name, check=False,
             timeout=30)
