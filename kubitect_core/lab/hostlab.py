"""A multi-host lab from a config: one simulated host per entry of `hosts:`, on one L2 segment.

`kubitect lab up seed --config ha.yaml` builds, for the seed's five remote hosts:

    workstation ns (kblab-seed)        switch ns (kblab-seed--switch)        host ns (kblab-seed--h-host1) ...
      eth0 10.10.15.254/20  ─────────  bridge "seg", gateway 10.10.0.1/20  ─────  up0 ─ br0 10.10.0.5/20
      kubitect runs here                 (a router with no way out)                 sshd :22 (user kubitect)
                                                                                    libvirtd + virtlogd

Each host has its own network namespace and private mounts (`hostns`), the config's bridge
enslaving its uplink with the host's `connection.ip`, an sshd admitting `connection.user` with the
config's `ssh.keyfile` (created when missing, in the lab's own home: `~` means the lab home,
never the user's real keys), and its own libvirtd. kubitect then reaches every host exactly as
on a real site: `qemu+ssh://kubitect@10.10.0.5/system`, from the workstation namespace.

The lab's home (`<data>/home`) is HOME and the kubitect home's parent for everything run with
`kubitect lab exec`; an image built here from the machine's own apt sources is imported there
to serve the config's distro, labelled as what it is (a Debian stand-in, never "Ubuntu").
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.lab import accounts, hostns, libvirtd, netns, segment, sshd

DATA_ROOT = Path("/var/lib/kubitect-lab")
MEMBER_SEP = "--"  # lab namespace + MEMBER_SEP + role: never part of a lab name
SWITCH_SUFFIX = "switch"
HOST_PREFIX = "h-"
UPLINK = "up0"
WORKSTATION_UPLINK = "eth0"
DEFAULT_KEYFILE = "~/.ssh/id_rsa"


class LabConfigError(ValueError):
    """The config cannot be simulated as it is; the message names the host and the field."""


@dataclass(frozen=True)
class PlannedHost:
    name: str
    namespace: str
    address: str
    user: str
    port: int
    keyfile: str  # as the config writes it
    key_path: str  # where it resolves inside the lab (the lab home)
    switch_port: str
    bridge: str | None  # the config's bridge (bridge mode), else None
    pool_dirs: tuple[str, ...] = ()  # directories the host must have (data pools)
    local: bool = False


@dataclass(frozen=True)
class LabPlan:
    namespace: str  # the workstation
    switch: str
    cidr: str
    gateway: str
    workstation_ip: str
    home: str
    data_dir: str
    hosts: tuple[PlannedHost, ...]
    distro: str
    image_url: str | None  # the URL the config's image comes from (None: a local os.source path)
    config_path: str = ""

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


def data_dir(ns: str) -> Path:
    """Where a lab keeps files that must be on disk (hosts' pools, its home): removed at `down`."""
    return DATA_ROOT / ns


def member_names(ns: str) -> list[str]:
    """Every namespace belonging to lab `ns` (switch and hosts), found by name even after a crash."""
    return netns.names(ns + MEMBER_SEP)


def host_namespace(ns: str, host: str) -> str:
    return f"{ns}{MEMBER_SEP}{HOST_PREFIX}{host}"


def switch_namespace(ns: str) -> str:
    return f"{ns}{MEMBER_SEP}{SWITCH_SUFFIX}"


def _attr(obj: Any, path: str, default: Any = None) -> Any:
    cur = obj
    for part in path.split("."):
        cur = getattr(cur, part, None) if cur is not None else None
    if cur is None:
        return default
    return getattr(cur, "value", cur)


def resolve_keyfile(keyfile: str, home: Path, host: str) -> Path:
    """The keyfile inside the lab: `~/...` is the lab home's; an absolute path must lie in it too.

    Why so strict: the lab creates and uses its own keys only, never the user's real ones.
    """
    if keyfile.startswith("~/"):
        return home / keyfile[2:]
    path = Path(keyfile)
    if path.is_absolute() and (home in path.parents):
        return path
    raise LabConfigError(
        f"hosts[{host}].connection.ssh.keyfile: {keyfile!r} is outside the lab's home; the lab makes its "
        f"own keys only, under {home}. Write it as ~/... (it then resolves in the lab's home)")


def plan(config: Any, topology: Any, ns: str, config_path: str = "") -> LabPlan:
    """What the lab for `config` consists of; LabConfigError when a host cannot be simulated."""
    hosts_cfg = list(getattr(config, "hosts", None) or [])
    if not hosts_cfg:
        raise LabConfigError("hosts: the config names no host to simulate")
    home = data_dir(ns) / "home"
    mode = str(_attr(config, "cluster.network.mode", "nat"))
    bridge = _attr(config, "cluster.network.bridge") if mode == "bridge" else None
    used: set[ipaddress.IPv4Address] = set()
    remote_ips = []
    for h in hosts_cfg:
        if str(_attr(h, "connection.type", "local")) == "remote":
            ip = _attr(h, "connection.ip")
            if not ip:
                raise LabConfigError(f"hosts[{h.name}].connection.ip: a remote host needs an address")
            remote_ips.append(ipaddress.IPv4Address(str(ip)))
    if mode == "bridge":
        network = ipaddress.IPv4Network(str(_attr(config, "cluster.network.cidr")), strict=False)
        gateway = str(_attr(config, "cluster.network.gateway") or next(network.hosts()))
    else:  # the VMs live behind each host's NAT/routed network; the hosts need a segment of their own
        first = remote_ips[0] if remote_ips else ipaddress.IPv4Address("10.250.0.10")
        network = ipaddress.IPv4Network(f"{first}/24", strict=False)
        gateway = str(next(ip for ip in network.hosts() if ip not in remote_ips))
    for ip in remote_ips:
        if ip not in network:
            raise LabConfigError(f"hosts: address {ip} is not in the segment {network} "
                                 f"({'cluster.network.cidr' if mode == 'bridge' else 'the first host'})")
    used |= set(remote_ips) | {ipaddress.IPv4Address(gateway)}
    for node in getattr(topology, "nodes", ()):
        if getattr(node, "ip", None):
            used.add(ipaddress.IPv4Address(str(node.ip)))
    if getattr(topology, "vip", None):
        used.add(ipaddress.IPv4Address(str(topology.vip)))
    workstation = next((ip for ip in reversed(list(network.hosts())) if ip not in used), None)
    if workstation is None:
        raise LabConfigError(f"cluster.network.cidr: no free address left in {network} for the workstation")
    planned = []
    for i, h in enumerate(hosts_cfg, start=1):
        name = str(h.name)
        local = str(_attr(h, "connection.type", "local")) != "remote"
        if local:
            raise LabConfigError(
                f"hosts[{name}].connection.type: a multi-host lab simulates remote hosts; a local host is "
                "the workstation itself: use `kubitect lab up NAME --libvirt` for a one-host lab")
        # Without ssh.keyfile kubitect uses ~/.ssh/id_rsa (Kubitect's default); in the lab, `~` is the lab home.
        keyfile = str(_attr(h, "connection.ssh.keyfile", "") or "") or DEFAULT_KEYFILE
        pools = tuple(sorted({str(_attr(p, "path")) for p in (getattr(h, "data_resource_pools", None) or [])}))
        planned.append(PlannedHost(
            name=name, namespace=host_namespace(ns, name), address=str(_attr(h, "connection.ip")),
            user=str(_attr(h, "connection.user", "") or ""), port=int(_attr(h, "connection.ssh.port", 22)),
            keyfile=keyfile, key_path=str(resolve_keyfile(keyfile, home, name)), switch_port=f"p{i}",
            bridge=bridge, pool_dirs=pools))
    os_ = _attr(config, "cluster.node_template.os")
    distro = str(_attr(os_, "distro", "ubuntu22"))
    source = _attr(os_, "source")
    from kubitect_core.config import DISTRO_PRESETS

    url = str(source) if source and "://" in str(source) else (None if source else DISTRO_PRESETS[distro][0])
    return LabPlan(namespace=ns, switch=switch_namespace(ns), cidr=str(network), gateway=gateway,
                   workstation_ip=str(workstation), home=str(home), data_dir=str(data_dir(ns)),
                   hosts=tuple(planned), distro=distro, image_url=url, config_path=config_path)


# --------------------------------------------------------------------------- bring-up


@dataclass
class HostUp:
    """What runs for one host (recorded in the lab state)."""

    name: str
    namespace: str
    address: str
    switch_port: str
    holder: int
    hostdir: str
    daemons: dict[str, int] = field(default_factory=dict)
    host_key: str = ""
    libvirt_socket: str = ""


def ensure_key(path: Path) -> str:
    """The public key of `path`, creating an ed25519 pair there (0600) when it does not exist."""
    pub = Path(f"{path}.pub")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kubitect-lab", "-f", str(path)],
                       check=True, capture_output=True)
        os.chmod(path, 0o600)
    if not pub.exists():
        out = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], check=True, capture_output=True, text=True)
        pub.write_text(out.stdout)
    return pub.read_text().strip()


def build_network(p: LabPlan) -> None:
    """Switch, workstation and host namespaces wired into one segment (all inside lab namespaces)."""
    net = p.network
    netns.create(p.switch)
    # A router with no uplink: it answers "unreachable" at once instead of dropping packets, so
    # anything trying to leave the lab (DNS, a mirror) fails fast rather than after timeouts.
    subprocess.run(netns.exec_argv(p.switch, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]), check=True)
    segment.create_switch(p.switch, net, p.gateway)
    segment.attach(p.switch, segment.Port("p0", p.namespace, WORKSTATION_UPLINK))
    segment.configure_plain(p.namespace, WORKSTATION_UPLINK, p.workstation_ip, net.prefixlen, p.gateway)
    for h in p.hosts:
        netns.create(h.namespace)
        segment.attach(p.switch, segment.Port(h.switch_port, h.namespace, UPLINK))
        if h.bridge:
            segment.configure_bridged_host(h.namespace, UPLINK, h.bridge, h.address, net.prefixlen, p.gateway)
        else:
            segment.configure_plain(h.namespace, UPLINK, h.address, net.prefixlen, p.gateway)


def start_host(p: LabPlan, h: PlannedHost, env: dict[str, str], say=lambda _m: None) -> HostUp:
    """Accounts, private libvirt config, the namespace holder, sshd; libvirtd comes separately."""
    hostdir = Path(p.data_dir) / "hosts" / h.name
    hostns.prepare_dirs(hostdir)
    user = accounts.write_accounts(hostdir / "etc", h.user, hostdir / "home" / h.user)
    accounts.authorize_key(user, ensure_key(Path(h.key_path)))
    for pool in h.pool_dirs:  # the admin prepared the data pool directories (under /mnt in the seed)
        _host_path(hostdir, pool).mkdir(parents=True, exist_ok=True)
    libvirtd.write_host_config(hostdir)
    host = hostns.start(h.namespace, hostdir, h.name, env)
    sshd.write_config(hostdir / "sshd", listen=h.address, port=h.port, user=h.user)
    sshd.start(host, hostdir / "sshd", env, listen=h.address, port=h.port)
    say(f"{h.name}: {h.address}, sshd for {h.user}")
    return HostUp(h.name, h.namespace, h.address, h.switch_port, host.holder, str(hostdir),
                  host_key=sshd.host_public_key(hostdir / "sshd"),
                  libvirt_socket=str(hostdir / "run-libvirt" / "libvirt-sock"))


def _host_path(hostdir: Path, path: str) -> Path:
    """Where a host path lives on the machine, for the directories the host has privately."""
    for src, dst in hostns.PRIVATE_DIRS:
        if path == dst or path.startswith(dst.rstrip("/") + "/"):
            return hostdir / src / path[len(dst):].lstrip("/")
    raise LabConfigError(f"path {path} is not on a private directory of the lab host "
                         f"({', '.join(d for _s, d in hostns.PRIVATE_DIRS)})")


def start_libvirtds(ups: list[HostUp], env: dict[str, str], say=lambda _m: None) -> None:
    """libvirtd in every host: the first alone (it may probe QEMU's capabilities, ~8 s), then the
    rest at once with the first one's capability cache, so they start in about a second each."""
    if not ups:
        return
    first, rest = ups[0], ups[1:]
    started = time.monotonic()
    first.daemons = libvirtd.start_in_host(hostns.HostNs(first.namespace, first.holder), Path(first.hostdir), env)
    say(f"{first.name}: libvirtd up in {time.monotonic() - started:.1f} s")
    caps = Path(first.hostdir) / "var-cache-libvirt/qemu/capabilities"
    for up in rest:
        dest = Path(up.hostdir) / "var-cache-libvirt/qemu/capabilities"
        dest.mkdir(parents=True, exist_ok=True)
        for xml in caps.glob("*.xml"):
            shutil.copyfile(xml, dest / xml.name)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
        futures = {up.name: pool.submit(libvirtd.start_in_host, hostns.HostNs(up.namespace, up.holder),
                                        Path(up.hostdir), env) for up in rest}
        for up in rest:
            up.daemons = futures[up.name].result()
    say(f"libvirtd up on {len(ups)} hosts in {time.monotonic() - started:.1f} s")


def write_known_hosts(p: LabPlan, ups: list[HostUp]) -> Path:
    """The hosts' keys in the lab home's ~/.ssh/known_hosts, as a user who has met them would have."""
    ssh = Path(p.home) / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh, 0o700)
    known = ssh / "known_hosts"
    ports = {h.name: h.port for h in p.hosts}
    lines = []
    for up in ups:
        host = up.address if ports[up.name] == 22 else f"[{up.address}]:{ports[up.name]}"
        lines.append(f"{host} {up.host_key}")
    known.write_text("\n".join(lines) + "\n")
    os.chmod(known, 0o600)
    return known


def lab_info(p: LabPlan, ups: list[HostUp]) -> dict[str, Any]:
    """The JSON-able state `kubitect lab status`, `lab exec` and chaos tests read."""
    return {"kind": "hosts", "plan": asdict(p), "hosts": {u.name: asdict(u) for u in ups}}
