"""Up, exec, down and status of a lab: one isolated network namespace, optionally with libvirtd.

A lab is named `<prefix><name>` (prefix `kblab-` by default). Every process the lab starts
carries `KUBITECT_LAB=<namespace>` in its environment, so that `down` can find what a crashed
run left behind even after the namespace itself is gone; nothing else is ever killed, and only
by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.lab import libvirtd, netns, procs

DEFAULT_PREFIX = "kblab-"
MARKER_ENV = "KUBITECT_LAB"
STATE_ROOT = Path("/run/kubitect-lab")
ETC_NETNS = Path("/etc/netns")


def namespace_name(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The namespace of lab `name` (a name that already has the prefix is kept as is)."""
    if not name:
        raise ValueError("a lab needs a name")
    ns = name if name.startswith(prefix) else prefix + name
    if len(ns) > 64 or "/" in ns or ns.startswith("."):
        raise ValueError(f"invalid lab name {name!r}")
    return ns


def lab_env(ns: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process run in the lab: the caller's, plus the lab marker."""
    env = dict(os.environ if base is None else base)
    env[MARKER_ENV] = ns
    return env


@dataclass
class LabStatus:
    """What `kubitect lab status` shows for one lab."""

    namespace: str
    exists: bool
    pids: list[int] = field(default_factory=list)
    daemons: dict[str, int | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _state_dir(ns: str) -> Path:
    return STATE_ROOT / ns


def lab_up(name: str, *, libvirt: bool = False, prefix: str = DEFAULT_PREFIX) -> LabStatus:
    """Create the lab from scratch: `down` first, a namespace with only `lo`, then daemons.

    Why `down` first: a lab left by a crashed run must never mix with the new one.
    """
    ns = namespace_name(name, prefix)
    lab_down(ns, prefix=prefix)
    started = time.monotonic()
    netns.create(ns)
    state = _state_dir(ns)
    state.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"namespace": ns, "libvirt": libvirt, "created": time.time()}
    try:
        if libvirt:
            info["daemons"] = libvirtd.start(ns, state, lab_env(ns))
    except BaseException:
        lab_down(ns, prefix=prefix)
        raise
    info["up_seconds"] = round(time.monotonic() - started, 2)
    (state / "lab.json").write_text(json.dumps(info))
    return lab_status_of(ns)


def lab_down(name: str, *, prefix: str = DEFAULT_PREFIX, grace: float = 3.0) -> list[int]:
    """Remove the lab: stop what its namespace holds, delete it, sweep marked leftovers.

    Idempotent, and works after a crash: processes still in the namespace are found with
    `ip netns pids`; processes left in an already deleted namespace are found by the marker.
    Returns the PIDs it signalled.
    """
    ns = namespace_name(name, prefix)
    killed: list[int] = []
    for _ in range(3):  # a dying parent may leave children that appear a moment later
        pids = netns.pids(ns)
        if not pids:
            break
        killed += procs.terminate(pids, grace)
    netns.delete(ns)
    killed += _sweep(lambda value: value == ns, grace)
    shutil.rmtree(_state_dir(ns), ignore_errors=True)
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    return killed


def lab_down_all(*, prefix: str = DEFAULT_PREFIX, grace: float = 3.0) -> dict[str, list[int]]:
    """Remove every lab with this prefix, then sweep any marked process of a lab of this prefix."""
    labs = set(netns.names(prefix))
    if STATE_ROOT.is_dir():
        labs |= {p.name for p in STATE_ROOT.iterdir() if p.name.startswith(prefix)}
    out = {ns: lab_down(ns, prefix=prefix, grace=grace) for ns in sorted(labs)}
    rest = _sweep(lambda value: value.startswith(prefix), grace)
    if rest:
        out["(stray)"] = rest
    return out


def _sweep(match, grace: float) -> list[int]:
    live = {netns.netns_inode_of_name(n) for n in netns.names()} - {None}
    stray = procs.stray_marked(MARKER_ENV, match, live)  # type: ignore[arg-type]
    return procs.terminate(stray, grace) if stray else []


def lab_status_of(ns: str) -> LabStatus:
    """Status of one lab namespace: does it exist, what runs in it, are its daemons alive."""
    state = _state_dir(ns)
    try:
        info = json.loads((state / "lab.json").read_text())
    except (OSError, ValueError):
        info = {}
    daemons = {
        d: libvirtd.read_pid(state / f"{d}.pid")
        for d in ("virtlogd", "libvirtd")
        if (state / f"{d}.pid").exists()
    }
    return LabStatus(ns, netns.exists(ns), netns.pids(ns), daemons, info)


def lab_status(prefix: str = DEFAULT_PREFIX) -> list[LabStatus]:
    """Status of every lab with this prefix (including half-removed ones with state left)."""
    names = set(netns.names(prefix))
    if STATE_ROOT.is_dir():
        names |= {p.name for p in STATE_ROOT.iterdir() if p.name.startswith(prefix)}
    return [lab_status_of(ns) for ns in sorted(names)]


class Lab:
    """A lab for tests: `with Lab("x") as lab: lab.run([...])`; always torn down on exit."""

    def __init__(self, name: str, libvirt: bool = False, prefix: str = DEFAULT_PREFIX) -> None:
        self.netns = namespace_name(name, prefix)
        self.libvirt = libvirt
        self.prefix = prefix
        self.status: LabStatus | None = None

    def up(self) -> Lab:
        """Create the lab (after removing any leftover of the same name)."""
        self.status = lab_up(self.netns, libvirt=self.libvirt, prefix=self.prefix)
        return self

    def down(self) -> list[int]:
        """Remove the lab; safe to call any number of times."""
        return lab_down(self.netns, prefix=self.prefix)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside the lab namespace."""
        return netns.exec_argv(self.netns, [str(a) for a in argv])

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for a lab process (marker included)."""
        return {**lab_env(self.netns), **(extra or {})}

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """`subprocess.run` inside the lab namespace, with the lab marker in the environment."""
        kw["env"] = lab_env(self.netns, kw.get("env"))
        return subprocess.run(self.argv(argv), **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """`subprocess.Popen` inside the lab namespace (for daemons a test stops itself)."""
        kw["env"] = lab_env(self.netns, kw.get("env"))
        return subprocess.Popen(self.argv(argv), **kw)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
