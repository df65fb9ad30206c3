"""Up, exec, down and status of a lab: one isolated network namespace, optionally with libvirtd.

A lab is named `<prefix><name>` (prefix `kblab-` by default). Every process the lab starts
carries `KUBITECT_LAB=<namespace>` in its environment, so that `down` can find what a crashed
run left behind even after the namespace itself is gone; nothing else is ever killed, and only
by PID.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.lab import hostlab, libvirtd, netns, procs
from kubitect_core.paths import HOME_ENV

DEFAULT_PREFIX = "kblab-"
MARKER_ENV = "KUBITECT_LAB"
STATE_ROOT = Path("/run/kubitect-lab")
ETC_NETNS = Path("/etc/netns")


def namespace_name(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The namespace of lab `name` (a name that already has the prefix is kept as is)."""
    if not name:
        raise ValueError("a lab needs a name")
    ns = name if name.startswith(prefix) else prefix + name
    if len(ns) > 64 or "/" in ns or ns.startswith(".") or hostlab.MEMBER_SEP in ns:
        raise ValueError(f"invalid lab name {name!r} (at most 64 characters, no '/', no leading '.', "
                         f"no '{hostlab.MEMBER_SEP}')")
    return ns


def lab_env(ns: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process run in the lab: the caller's, plus the lab marker; in a
    multi-host lab also the lab's own HOME and kubitect home (its keys, clusters and images)."""
    env = dict(os.environ if base is None else base)
    env[MARKER_ENV] = ns
    home = _info(ns).get("home")
    if home:
        env["HOME"] = home
        env[HOME_ENV] = str(Path(home) / ".kubitect")
    return env


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` in the lab's workstation namespace.

    In a multi-host lab the account database the command sees names the lab home as the calling
    user's home directory (a private /etc/passwd in the command's own mount namespace): OpenSSH
    reads known_hosts and its config from there, not from $HOME, so the `ssh` libvirt spawns for
    qemu+ssh records host keys in the lab's home, never in the user's real ~/.ssh.
    """
    argv = [str(a) for a in argv]
    passwd = _state_dir(ns) / "passwd"
    if not _info(ns).get("home") or not passwd.exists():
        return netns.exec_argv(ns, argv)
    script = f'mount --bind {shlex.quote(str(passwd))} /etc/passwd && exec "$@"'
    return netns.exec_argv(ns, ["sh", "-c", script, "sh", *argv])


def _write_workstation_passwd(ns: str, home: str) -> None:
    """/etc/passwd as the lab's commands see it: the caller's entry with the lab home (see exec_argv)."""
    uid = os.getuid()
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 7 and parts[2] == str(uid):
            parts[5] = home
            line = ":".join(parts)
        lines.append(line)
    (_state_dir(ns) / "passwd").write_text("\n".join(lines) + "\n")
    os.chmod(_state_dir(ns) / "passwd", 0o644)


def _info(ns: str) -> dict[str, Any]:
    try:
        return json.loads((_state_dir(ns) / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


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


def lab_up(name: str, *, libvirt: bool = False, prefix: str = DEFAULT_PREFIX, config: Path | None = None,
           image: Path | None = None, progress=None) -> LabStatus:
    """Create the lab from scratch: `down` first, a namespace with only `lo`, then daemons.

    With `config`, the lab simulates the config's hosts (see `kubitect_core.lab.hostlab`) and
    the workstation namespace is wired to their segment; `image` (kubitect's own VM image by
    default, built when missing) is imported into the lab's home to serve the config's distro.
    Why `down` first: a lab left by a crashed run must never mix with the new one.
    """
    ns = namespace_name(name, prefix)
    if config is not None:
        return _hosts_up(ns, prefix, Path(config), image, progress or (lambda _m: None))
    lab_down(ns, prefix=prefix)
    started = time.monotonic()
    netns.create(ns)
    state = _state_dir(ns)
    state.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"namespace": ns, "libvirt": libvirt, "created": time.time()}

    def work() -> None:
        if libvirt:
            info["daemons"] = libvirtd.start(ns, state, lab_env(ns))

    return _build(ns, prefix, info, started, work)


def _build(ns: str, prefix: str, info: dict[str, Any], started: float, work) -> LabStatus:
    """Runs `work()` (which fills `info`) and records the lab; a failure removes the half-built lab."""
    try:
        work()
    except BaseException:
        lab_down(ns, prefix=prefix)
        raise
    info["up_seconds"] = round(time.monotonic() - started, 2)
    (_state_dir(ns) / "lab.json").write_text(json.dumps(info))
    return lab_status_of(ns)


def load_lab_config(config: Path):
    """(config, topology) of a config file, validated with every installed plugin's extensions."""
    from kubitect_core.config import load_config
    from kubitect_core.engine import validation_context
    from kubitect_core.plugins import load_registry

    loaded = load_config(config, context=validation_context(load_registry()))
    return loaded.config, loaded.topology


def _hosts_up(ns: str, prefix: str, config: Path, image: Path | None, say) -> LabStatus:
    cfg, topo = load_lab_config(config)
    plan = hostlab.plan(cfg, topo, ns, str(config.resolve()))
    image_path = None
    if plan.image_url:
        image_path = image or _default_image(say)
    lab_down(ns, prefix=prefix)
    started = time.monotonic()
    state = _state_dir(ns)
    state.mkdir(parents=True, exist_ok=True)
    env = lab_env(ns)
    info: dict[str, Any] = {"namespace": ns, "libvirt": True, "created": time.time(), "home": plan.home,
                            "kind": "hosts"}
    (state / "lab.json").write_text(json.dumps(info))
    _write_workstation_passwd(ns, plan.home)

    def work() -> None:
        netns.create(ns)
        hostlab.build_network(plan)
        say(f"segment {plan.cidr}: gateway {plan.gateway}, workstation {plan.workstation_ip}, "
            f"{len(plan.hosts)} hosts")
        ups = [hostlab.start_host(plan, h, env, say) for h in plan.hosts]
        hostlab.start_libvirtds(ups, env, say)
        hostlab.write_known_hosts(plan, ups)
        if image_path is not None:
            info["image"] = _import_image(plan, image_path, say)
        info.update(hostlab.lab_info(plan, ups))

    return _build(ns, prefix, info, started, work)


def _default_image(say) -> Path:
    """kubitect's own Debian VM image (keepalived and HAProxy preinstalled) from the caller's home."""
    from kubitect_core.images.vm_image import LB_PACKAGES, ensure_vm_image
    from kubitect_core.paths import kubitect_home

    say("the lab serves the config's distro with kubitect's own Debian image (built once, ~1 min)")
    return ensure_vm_image(kubitect_home(), extra_packages=LB_PACKAGES, progress=say).qcow2


def _import_image(plan: hostlab.LabPlan, image: Path, say) -> dict[str, Any]:
    from kubitect_core.images import base_cache

    label = (f"Debian 12 built by kubitect from this machine's apt sources, standing in for {plan.distro} "
             f"(lab); it is not {plan.distro}")
    entry = base_cache.import_image(plan.image_url, str(image), Path(plan.home) / ".kubitect", label=label,
                                    progress=say)
    say(f"{plan.distro} is served in this lab by {entry.describe()}")
    return {"distro": plan.distro, "url": plan.image_url, "served_by": entry.describe(), "label": label,
            "sha256": entry.digest}


def lab_down(name: str, *, prefix: str = DEFAULT_PREFIX, grace: float = 3.0) -> list[int]:
    """Remove the lab: stop what its namespace holds, delete it, sweep marked leftovers.

    Idempotent, and works after a crash: processes still in the namespace are found with
    `ip netns pids`; processes left in an already deleted namespace are found by the marker.
    Returns the PIDs it signalled.
    """
    ns = namespace_name(name, prefix)
    killed: list[int] = []
    # The simulated hosts first (their VMs, libvirtds, sshds), then the switch, then the lab
    # itself; members are found by name, so this also works when the lab's state is gone.
    for member in [*hostlab.member_names(ns), ns]:
        for _ in range(3):  # a dying parent may leave children that appear a moment later
            pids = netns.pids(member)
            if not pids:
                break
            killed += procs.terminate(pids, grace)
        netns.delete(member)
    killed += _sweep(lambda value: value == ns, grace)
    shutil.rmtree(_state_dir(ns), ignore_errors=True)
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    shutil.rmtree(hostlab.data_dir(ns), ignore_errors=True)
    return killed


def lab_down_all(*, prefix: str = DEFAULT_PREFIX, grace: float = 3.0) -> dict[str, list[int]]:
    """Remove every lab with this prefix, then sweep any marked process of a lab of this prefix."""
    labs = {n.split(hostlab.MEMBER_SEP)[0] for n in netns.names(prefix)}
    if STATE_ROOT.is_dir():
        labs |= {p.name for p in STATE_ROOT.iterdir() if p.name.startswith(prefix)}
    if hostlab.DATA_ROOT.is_dir():
        labs |= {p.name for p in hostlab.DATA_ROOT.iterdir() if p.name.startswith(prefix)}
    out = {ns: lab_down(ns, prefix=prefix, grace=grace) for ns in sorted(labs)}
    rest = _sweep(lambda value: value.startswith(prefix), grace)
    if rest:
        out["(stray)"] = rest
    return out


def _sweep(match, grace: float) -> list[int]:
    live = {netns.netns_inode_of_name(n) for n in netns.names()} - {None}
    stray = procs.stray_marked(MARKER_ENV, match, live)  # type: ignore[arg-type]
    return procs.terminate(stray, grace) if stray else []


def set_uplink(ns: str, host: str, *, up: bool) -> None:
    """Cuts (up=False) or restores a simulated host's cable at the lab's switch."""
    hosts = _info(ns).get("hosts") or {}
    if host not in hosts:
        raise KeyError(f"lab {ns} has no simulated host {host!r} (hosts: {', '.join(hosts) or 'none'})")
    from kubitect_core.lab import segment

    segment.set_port(hostlab.switch_namespace(ns), hosts[host]["switch_port"], up=up)


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
    names = {n.split(hostlab.MEMBER_SEP)[0] for n in netns.names(prefix)}
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
        return exec_argv(self.netns, argv)

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
