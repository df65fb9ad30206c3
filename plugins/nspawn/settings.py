"""What the nspawn provider reads from the resolved config, in one place.

Only a few attributes are read (the network, the node user, the hosts' connection type), so a
stand-in config object with those attributes is enough for tests.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from kubitect_core.sdk import Node, StageContext

from .host import NspawnError, bridge_name

ROOTFS_ENV = "KUBITECT_NSPAWN_ROOTFS"  # use this rootfs directory instead of the image cache
DISK_MOUNT_DIR = "/var/lib/kubitect/disks"  # where a node sees its data disks
ROOTFS_EXTRA_PACKAGES: tuple[str, ...] = ("sudo", "openssh-server", "iproute2")


@dataclass(frozen=True)
class ClusterNet:
    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.network.prefixlen}"


def cluster_net(ctx: StageContext) -> ClusterNet:
    """The cluster network and gateway (default: the first host address of the CIDR)."""
    net_cfg = ctx.config.cluster.network
    network = ipaddress.ip_network(str(net_cfg.cidr), strict=False)
    gateway = getattr(net_cfg, "gateway", None)
    gw = ipaddress.ip_address(str(gateway)) if gateway else next(network.hosts())
    if gw not in network:
        raise NspawnError(f"cluster.network.gateway {gw} is outside cluster.network.cidr {network}")
    return ClusterNet(network, gw)  # type: ignore[arg-type]


def cluster_bridge(ctx: StageContext, *, derived: bool = False) -> str:
    """The bridge nodes attach to: `cluster.network.bridge` when set, else `kb-<hash8>`."""
    named = None if derived else getattr(ctx.config.cluster.network, "bridge", None)
    return str(named) if named else bridge_name(ctx.cluster_dir)


def node_user(ctx: StageContext) -> str:
    """The login every node gets (the cluster key, passwordless sudo)."""
    user = getattr(ctx.ssh, "user", None)
    return user or ctx.config.cluster.node_template.user


def my_nodes(ctx: StageContext, hosts: list[str]) -> list[Node]:
    """The topology's nodes placed on the hosts this provider serves."""
    return [n for n in ctx.topology.nodes if n.host in set(hosts)]


def remote_hosts(ctx: StageContext, hosts: list[str]) -> list[str]:
    """Hosts that name a remote machine: nspawn nodes run only on the local one (for now)."""
    out = []
    for host in getattr(ctx.config, "hosts", None) or []:
        conn = getattr(host, "connection", None)
        if host.name in hosts and getattr(conn, "type", "local") not in ("local", "localhost"):
            out.append(host.name)
    return out


def require_local(ctx: StageContext, hosts: list[str]) -> None:
    """Refuses remote hosts with a message that says what is supported."""
    remote = remote_hosts(ctx, hosts)
    if remote:
        raise NspawnError(
            f"hosts {', '.join(remote)}: the nspawn provider runs containers on the local machine only "
            "(hosts[].connection.type local); use provider libvirt for remote hosts"
        )


def nodes_dir(ctx: StageContext) -> Path:
    """Per-node state (host key, data disks, logs) of this cluster's containers."""
    return Path(ctx.cluster_dir) / "nspawn"


def rootfs(ctx: StageContext) -> Path:
    """The shared read-only root filesystem: an explicit override, else the cached image."""
    explicit = ctx.options.get("nspawn_rootfs") or os.environ.get(ROOTFS_ENV)
    if explicit:
        path = Path(explicit)
        if not (path / "usr/lib/systemd/systemd").exists() and not (path / "lib/systemd/systemd").exists():
            raise NspawnError(f"{path} is not a bootable root filesystem (no systemd in it)")
        return path
    from kubitect_core.sdk.images import ensure_rootfs

    return ensure_rootfs(Path(ctx.home), extra_packages=ROOTFS_EXTRA_PACKAGES,
                         progress=lambda msg: ctx.progress("image", msg))
