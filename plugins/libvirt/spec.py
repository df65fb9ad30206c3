"""The desired libvirt objects of one cluster, derived from the resolved config and topology.

Everything the provider creates is named and shaped here, once, so plan, apply and destroy agree:
names (`<cluster>-network`, `<cluster>-main-resource-pool`, `<vm>-main-disk`, ...), the stable
MAC of a node that names none, and the per-host view of the cluster network.

The config is read through small accessors (`attr`) rather than a fixed class, so the provider
works with the resolved config kubitect hands it (`StageContext.config`: the image source and
the NIC already resolved from the distro) and with the plain namespaces some tests build.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.sdk import Node, Topology

from .host_ssh import HostSsh, host_ssh

DEFAULT_POOL_PATH = "/var/lib/libvirt/images/"
METADATA_NS = "https://kubitect.dev/xmlns/1"
METADATA_PREFIX = "kubitect"


def attr(obj: Any, path: str, default: Any = None) -> Any:
    """Reads a dotted attribute path (or mapping keys), returning `default` for any missing link.

    Why: defaults are resolved by the config model, but a plugin must not crash on an optional
    section the user left out (e.g. `connection.ssh` of a local host).
    """
    cur = obj
    for part in path.split("."):
        if cur is None:
            return default
        if isinstance(cur, dict):
            cur = cur.get(part)
        else:
            cur = getattr(cur, part, None)
    if cur is None:
        return default
    if isinstance(cur, enum.Enum):
        return cur.value
    return cur


def stable_mac(cluster: str, node_name: str) -> str:
    """A MAC in QEMU's 52:54:00 range derived from cluster and node name.

    Why: DHCP reservations and re-applies must see the same MAC every time, also when the config
    gives none (libvirt would otherwise pick a random one at each define).
    """
    digest = hashlib.sha256(f"{cluster}/{node_name}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def instance_id(cluster: str, node_name: str) -> str:
    """A cloud-init instance-id that never changes for a node, so cloud-init runs once per VM."""
    return "iid-" + hashlib.sha256(f"{cluster}/{node_name}/instance".encode()).hexdigest()[:16]


def env_key(host: str) -> str:
    """`host-1.a` -> `HOST_1_A`: the suffix of the per-host URI override variable."""
    return re.sub(r"[^A-Za-z0-9]", "_", host).upper()


@dataclass(frozen=True)
class HostSpec:
    name: str
    uri: str
    remote: bool
    main_pool_path: str  # parent directory; the pool dir is <this>/<cluster>-main-resource-pool
    data_pools: dict[str, str] = field(default_factory=dict)  # pool name -> parent directory
    ssh: HostSsh | None = None  # a qemu+ssh host (not an overridden URI)


@dataclass(frozen=True)
class NetSpec:
    mode: str  # nat | route | bridge
    cidr: ipaddress.IPv4Network
    gateway: str
    bridge: str | None
    dns: tuple[str, ...]
    nic: str

    @property
    def prefix(self) -> int:
        return self.cidr.prefixlen

    @property
    def nameservers(self) -> tuple[str, ...]:
        return self.dns or (self.gateway,)


@dataclass(frozen=True)
class ImageSpec:
    source: str  # a local path or a URL
    distro: str


@dataclass(frozen=True)
class Names:
    """Every libvirt object name of one cluster."""

    cluster: str

    @property
    def network(self) -> str:
        return f"{self.cluster}-network"

    @property
    def main_pool(self) -> str:
        return f"{self.cluster}-main-resource-pool"

    def data_pool(self, pool: str) -> str:
        return f"{self.cluster}-{pool}-data-resource-pool"

    def pool_for(self, pool: str) -> str:
        """The libvirt pool a data disk with `pool:` lands in ("main" is the main pool)."""
        return self.main_pool if pool == "main" else self.data_pool(pool)

    @property
    def base_volume(self) -> str:
        return f"{self.cluster}-base-volume"

    @property
    def base_kernel(self) -> str:
        return f"{self.cluster}-base-kernel"

    @property
    def base_initrd(self) -> str:
        return f"{self.cluster}-base-initrd"

    @staticmethod
    def main_disk(vm: str) -> str:
        return f"{vm}-main-disk"

    @staticmethod
    def data_disk(vm: str, disk: str) -> str:
        return f"{vm}-{disk}-data-disk"

    @staticmethod
    def seed(vm: str) -> str:
        return f"{vm}-cloudinit.iso"

    def node_volumes(self, node: Node) -> list[tuple[str, str]]:
        """(pool, volume) of a node's disks, main disk first: what storage creates for it."""
        out = [(self.main_pool, self.main_disk(node.name))]
        out += [(self.pool_for(d.pool), self.data_disk(node.name, d.name)) for d in node.data_disks]
        return out


def host_uri(host: Any, overrides: dict[str, str] | None = None,
             ssh_dir: Path | None = None) -> tuple[str, bool]:
    """The libvirt URI of a configured host and whether it is remote.

    Why overridable: tests map hosts to `test:///default` (option `libvirt_uris` or env
    `KUBITECT_LIBVIRT_URI_<HOST>`), and a lab may reach a "local" host through another socket.
    A remote host's URI checks its SSH host key (see host_ssh); `ssh_dir` is the cluster's.
    """
    uri, remote, _ssh = _host_access(host, overrides, ssh_dir)
    return uri, remote


def _host_access(host: Any, overrides: dict[str, str] | None,
                 ssh_dir: Path | None) -> tuple[str, bool, HostSsh | None]:
    name = attr(host, "name")
    ctype = str(attr(host, "connection.type", "local")).lower()
    remote = ctype == "remote"
    override = (overrides or {}).get(name) or os.environ.get(f"KUBITECT_LIBVIRT_URI_{env_key(name)}")
    if override:
        return override, remote, None
    if not remote:
        return "qemu:///system", False, None
    ssh = host_ssh(host, ssh_dir or Path("."), attr)
    return ssh.uri(), True, ssh


def host_specs(config: Any, overrides: dict[str, str] | None = None,
               ssh_dir: Path | None = None) -> dict[str, HostSpec]:
    """Every configured host, by name, with its URI and pool directories."""
    out: dict[str, HostSpec] = {}
    for host in attr(config, "hosts", []) or []:
        uri, remote, ssh = _host_access(host, overrides, ssh_dir)
        pools = {attr(p, "name"): str(attr(p, "path", DEFAULT_POOL_PATH))
                 for p in attr(host, "data_resource_pools", []) or []}
        out[attr(host, "name")] = HostSpec(
            name=attr(host, "name"), uri=uri, remote=remote,
            main_pool_path=str(attr(host, "main_resource_pool_path", DEFAULT_POOL_PATH)),
            data_pools=pools, ssh=ssh)
    return out


def _resolved(config: Any, path: str) -> Any:
    """A value the config loader resolves from the distro (image URL, NIC); a config that skipped
    the loader is a programming error, reported as such."""
    value = attr(config, path)
    if not value:
        raise ValueError(f"{path} is not set: the provider needs a config resolved by kubitect's loader")
    return value


def net_spec(config: Any) -> NetSpec:
    """The cluster network as the provider needs it (gateway defaulted to the first address)."""
    cidr = ipaddress.IPv4Network(str(attr(config, "cluster.network.cidr")), strict=False)
    gateway = attr(config, "cluster.network.gateway") or str(next(cidr.hosts()))
    nic = _resolved(config, "cluster.node_template.os.network_interface")
    dns = tuple(str(d) for d in attr(config, "cluster.node_template.dns", []) or [])
    return NetSpec(mode=str(attr(config, "cluster.network.mode", "nat")), cidr=cidr,
                   gateway=str(gateway), bridge=attr(config, "cluster.network.bridge"), dns=dns,
                   nic=str(nic))


def image_spec(config: Any) -> ImageSpec:
    """The base image source: `os.source` (resolved from the distro when the config names none)."""
    distro = str(attr(config, "cluster.node_template.os.distro", "ubuntu22"))
    source = str(_resolved(config, "cluster.node_template.os.source"))
    if "://" not in source:
        source = os.path.expanduser(source)
    return ImageSpec(source=source, distro=distro)


def node_mac(topology: Topology, node: Node) -> str:
    """The node's configured MAC, else its stable derived one (lower case)."""
    return (node.mac or stable_mac(topology.cluster, node.name)).lower()


def pool_dir(parent: str, pool_name: str) -> str:
    """A pool's directory: `<parent>/<pool name>` (per cluster, since the name starts with it)."""
    return str(Path(parent) / pool_name)


def serial_log(node: str) -> str:
    """Where a node's boot console is logged on its host (the domain's serial <log>)."""
    return f"/var/log/libvirt/qemu/{node}-serial.log"
