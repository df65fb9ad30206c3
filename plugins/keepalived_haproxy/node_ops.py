"""What the plugin does on one load balancer node, over `kubitect_core.remote` (one SSH connection).

Every step first reads the node's current state and acts only on a difference, so a second
apply with the same config changes nothing and restarts nothing.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from kubitect_core.sdk import Change, Remote, RemoteError

from .guard import NodeProbe, parse_probe
from .render import Layout, Rendered, content_hash

SYSCTL_FILE = "/etc/sysctl.d/90-kubitect-loadbalancer.conf"
SYSCTL_TEXT = ("# Managed by kubitect: HAProxy may bind the VIP before this node holds it.\n"
               "net.ipv4.ip_nonlocal_bind = 1\n")
SERVICES = {"haproxy": "haproxy", "keepalived": "keepalived"}
PROBE_SCRIPT = (Path(__file__).parent / "node_probe.sh").read_text()


@dataclass
class NodeState:
    """What is on the node now (read-only facts gathered by `inspect`)."""

    packages: dict[str, bool]
    pkg_manager: str | None
    sysctl_file: str | None
    sysctl_value: str
    files: dict[str, str | None]  # path -> content (None: missing)
    active: dict[str, bool] = field(default_factory=dict)
    enabled: dict[str, bool] = field(default_factory=dict)
    addresses: str = ""  # `ip -4 -o addr show`: whether this node holds the VIP right now

    def holds(self, vip: str | None) -> bool:
        """True when one of this node's interfaces carries `vip`."""
        return bool(vip) and f" {vip}/" in self.addresses


def pkg_manager(os_release: str) -> str | None:
    """apt on Debian/Ubuntu families, dnf on RHEL/Fedora families, from /etc/os-release."""
    fields = {}
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip().strip('"').lower()
    family = " ".join([fields.get("ID", ""), fields.get("ID_LIKE", "")]).split()
    if {"debian", "ubuntu"} & set(family):
        return "apt"
    if {"rhel", "fedora", "centos", "rocky", "almalinux"} & set(family):
        return "dnf"
    return None


async def _read(remote: Remote, path: str) -> str | None:
    try:
        return (await remote.get(path, sudo=True)).decode(errors="replace")
    except RemoteError:
        return None


async def probe(remote: Remote) -> NodeProbe:
    """What keepalived may use on this node (node_probe.sh, as root; changes nothing)."""
    res = await remote.run("sh -s", sudo=True, input=PROBE_SCRIPT, check=False, timeout=60)
    return parse_probe(res.stdout)


async def inspect(remote: Remote, rendered: Rendered, services: list[str],
                  extra_paths: tuple[str, ...] = ()) -> NodeState:
    """Read packages, sysctl, the managed files (and `extra_paths`, managed files this render does
    not want, such as a no longer wanted drop-in) and service states; changes nothing."""
    os_release = await _read(remote, "/etc/os-release") or ""
    packages = {}
    for svc in services:
        res = await remote.run(f"command -v {svc} || test -x /usr/sbin/{svc}", check=False)
        packages[svc] = res.ok
    # /proc, not `sysctl`: /usr/sbin is not in a normal user's PATH on Debian
    sysctl = await remote.run("cat /proc/sys/net/ipv4/ip_nonlocal_bind", check=False)
    files = {path: await _read(remote, path) for path in (*rendered.files, *extra_paths)}
    addresses = await remote.run("ip -4 -o addr show", check=False)
    state = NodeState(packages, pkg_manager(os_release), await _read(remote, SYSCTL_FILE),
                      sysctl.stdout.strip(), files, addresses=addresses.stdout)
    for svc in SERVICES:
        state.active[svc] = (await remote.run(f"systemctl is-active --quiet {svc}", check=False)).ok
        state.enabled[svc] = (await remote.run(f"systemctl is-enabled --quiet {svc}", check=False)).ok
    return state


def planned_changes(node: str, state: NodeState, rendered: Rendered, services: list[str],
                    layout: Layout = Layout()) -> list[Change]:
    """The Changes apply would make on this node, given its current state (pure: used by plan)."""
    changes = []
    for svc in services:
        if not state.packages.get(svc):
            changes.append(Change("create", "package", svc, node, f"install with {state.pkg_manager or '?'}"))
    sysctl_ok = state.sysctl_file == SYSCTL_TEXT and state.sysctl_value == "1"
    changes.append(Change("keep" if sysctl_ok else "change", "sysctl", "net.ipv4.ip_nonlocal_bind", node,
                          "" if sysctl_ok else "set to 1 persistently"))
    for path, text in rendered.files.items():
        current = state.files.get(path)
        if current is None:
            changes.append(Change("create", "file", path, node))
        elif content_hash(current) != content_hash(text):
            changes.append(Change("change", "file", path, node, "content differs"))
        else:
            changes.append(Change("keep", "file", path, node))
    for path, current in state.files.items():
        if path not in rendered.files and current is not None:
            changes.append(Change("delete", "file", path, node, "no longer wanted"))
    changed = {c.name for c in changes if c.kind == "file" and c.action != "keep"}
    for svc in services:
        if not state.active.get(svc):
            changes.append(Change("create", "service", svc, node, "enable and start"))
        elif not state.enabled.get(svc):
            changes.append(Change("change", "service", svc, node, "enable"))
        elif changed & set(layout.service_files(svc)):
            how = "restart" if svc == "keepalived" and (layout.keepalived_dropin in changed or needs_restart(
                state.files.get(layout.keepalived_conf), rendered.files.get(layout.keepalived_conf))) else "reload"
            changes.append(Change("change", "service", svc, node, how))
        else:
            changes.append(Change("keep", "service", svc, node))
    for svc in set(SERVICES) - set(services):
        if state.active.get(svc) or state.enabled.get(svc):
            changes.append(Change("delete", "service", svc, node, "not needed without a VIP: stop and disable"))
    return changes


_GLOBAL_DEFS = re.compile(r"^global_defs \{\n.*?^\}", re.S | re.M)


def needs_restart(old: str | None, new: str | None) -> bool:
    """A keepalived.conf change a reload does not apply: `global_defs` (memory lock, VRRP
    version) is read when the VRRP process starts. Everything else reloads in place. (A changed
    real-time drop-in restarts keepalived too: systemd sets the scheduling at start.)"""
    if not old or not new:
        return False
    before, after = _GLOBAL_DEFS.search(old), _GLOBAL_DEFS.search(new)
    return (before.group(0) if before else "") != (after.group(0) if after else "")


async def install(remote: Remote, manager: str | None, packages: list[str]) -> None:
    """Install missing packages with the distro's manager, without starting them on Debian first."""
    names = " ".join(shlex.quote(p) for p in packages)
    if manager == "apt":
        cmd = (f"export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q {names} "
               f"|| {{ apt-get update -q && apt-get install -y -q {names}; }}")
    elif manager == "dnf":
        cmd = f"dnf install -y -q {names}"
    else:
        raise RemoteError(f"{remote.label}: unknown distribution (no apt or dnf family in /etc/os-release); "
                          f"install {names} yourself")
    await remote.run(cmd, sudo=True, timeout=900)


async def ensure_sysctl(remote: Remote) -> None:
    """net.ipv4.ip_nonlocal_bind=1 now and after reboot: HAProxy binds the VIP on the backup too."""
    await remote.put(SYSCTL_TEXT, SYSCTL_FILE, mode=0o644, sudo=True)
    await remote.run("sysctl -q -w net.ipv4.ip_nonlocal_bind=1", sudo=True)


VALIDATORS = {".cfg": "haproxy -c -q -f {path}", ".conf": "keepalived -t -f {path}"}


async def install_file(remote: Remote, path: str, text: str, layout: Layout) -> None:
    """Upload next to the live file, validate there, and only then replace the live file.

    A config that HAProxy or keepalived rejects never goes live; the error carries the
    validator's message and the temp file is removed.
    """
    suffix = ".cfg" if path == layout.haproxy_cfg else ".conf" if path == layout.keepalived_conf else None
    if suffix is None:  # the check script and the systemd drop-ins: no validator
        await remote.put(text, path, mode=0o755 if path == layout.check_script else 0o644, sudo=True)
        return
    tmp = f"{path}.kubitect-new{suffix}"
    await remote.put(text, tmp, mode=0o644, sudo=True)
    check = await remote.run(VALIDATORS[suffix].format(path=shlex.quote(tmp)), sudo=True, check=False)
    if not check.ok:
        await remote.run(f"rm -f {shlex.quote(tmp)}", sudo=True, check=False)
        raise RemoteError(f"{remote.label}: rendered {path} failed validation: "
                          f"{(check.stderr or check.stdout).strip()[:800]}")
    await remote.run(f"mv -f {shlex.quote(tmp)} {shlex.quote(path)}", sudo=True)


async def converge_service(remote: Remote, svc: str, *, running: bool, enabled: bool, changed: bool,
                           restart: bool = False) -> str:
    """Enable + start a stopped service, reload a running one whose config changed (restart when
    `restart`: a change a reload does not apply), else nothing."""
    if not enabled:
        await remote.run(f"systemctl enable --quiet {svc}", sudo=True)
    if not running:
        await remote.run(f"systemctl start {svc}", sudo=True)
        return "create"
    if changed:
        await remote.run(f"systemctl {'restart' if restart else 'reload'} {svc}", sudo=True)
        return "change"
    return "change" if not enabled else "keep"


async def daemon_reload(remote: Remote) -> None:
    """systemd re-reads unit files (after a drop-in was written or removed)."""
    await remote.run("systemctl daemon-reload", sudo=True)


async def sync_exit_file(remote: Remote, layout: Layout) -> None:
    """Writes HAProxy's current state to the tracked file (0 running, 1 not), for a drop-in just
    installed on a running HAProxy, whose ExecStartPost has not run yet."""
    path = shlex.quote(layout.haproxy_down_file)
    await remote.run(f"if systemctl is-active --quiet haproxy; then echo 0 > {path}; else echo 1 > {path}; fi",
                     sudo=True)


async def remove(remote: Remote, services: list[str], paths: list[str]) -> list[str]:
    """Stop and disable services, then delete the files kubitect put there; returns what went."""
    gone = []
    for svc in services:
        res = await remote.run(f"systemctl disable --now --quiet {svc}", sudo=True, check=False)
        if res.ok:
            gone.append(svc)
    for path in paths:
        res = await remote.run(f"test -e {shlex.quote(path)} && rm -f {shlex.quote(path)}", sudo=True, check=False)
        if res.ok:
            gone.append(path)
    return gone
