"""What the topology picture shows, computed once from a loaded config.

The SVG, the terminal tree and `-o json` all draw from this one view, so the three can never
disagree about a total or about where a node runs. Nothing here contacts a host: it is the
config's intent (`LoadedConfig.config` and `.topology`), not the as-built state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubitect_core.config import LoadedConfig
from kubitect_core.config.context import api_port
from kubitect_core.topology import Node

ROLE_ORDER = ("lb", "master", "worker")
ROLE_LABELS = {"lb": "load balancer", "master": "master", "worker": "worker"}
MAIN_POOL = "main"
VIEW_FORMAT = 1  # bumped when a key of the JSON output changes meaning or disappears


@dataclass(frozen=True)
class Totals:
    """Resources asked of a host (or of the whole cluster) by the nodes placed on it."""

    nodes: int = 0
    cpu: int = 0
    ram_gib: int = 0
    disk_gib: dict[str, int] = field(default_factory=dict)  # pool name -> GiB, "main" first

    @property
    def disk_gib_total(self) -> int:
        return sum(self.disk_gib.values())

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "cpu": self.cpu, "ram_gib": self.ram_gib, "disk_gib": dict(self.disk_gib),
                "disk_gib_total": self.disk_gib_total}


def totals_of(nodes: tuple[Node, ...] | list[Node]) -> Totals:
    """Sums vCPUs, RAM and disk per pool: a node's main disk lives in the host's main pool,
    each data disk in the pool it names ("main" or one of the host's dataResourcePools)."""
    disk: dict[str, int] = {}
    for node in nodes:
        disk[MAIN_POOL] = disk.get(MAIN_POOL, 0) + node.main_disk_gib
        for d in node.data_disks:
            disk[d.pool] = disk.get(d.pool, 0) + d.size_gib
    ordered = {MAIN_POOL: disk.pop(MAIN_POOL)} if MAIN_POOL in disk else {}
    ordered.update(sorted(disk.items()))
    return Totals(nodes=len(nodes), cpu=sum(n.cpu for n in nodes), ram_gib=sum(n.ram_gib for n in nodes),
                  disk_gib=ordered)


@dataclass(frozen=True)
class Pool:
    name: str
    path: str


@dataclass(frozen=True)
class HostView:
    name: str
    default: bool
    connection: str  # "local" or "remote"
    user: str | None
    ip: str | None
    provider: str
    pools: tuple[Pool, ...]  # the main pool first, then the data resource pools
    nodes: tuple[Node, ...]  # load balancers, then masters, then workers (config order within a role)
    totals: Totals

    @property
    def reach(self) -> str:
        """How kubitect reaches the host, in a user's words: "local" or "remote user@ip"."""
        if self.connection == "local":
            return "local"
        return f"remote {self.user}@{self.ip}" if self.user else f"remote {self.ip}"


@dataclass(frozen=True)
class ForwardedPort:
    name: str
    port: int
    target_port: int
    target: str


@dataclass(frozen=True)
class NetworkView:
    mode: str
    cidr: str
    gateway: str
    bridge: str | None

    @property
    def summary(self) -> str:
        """"bridge br0 · 10.10.0.0/20 · gateway 10.10.0.1", or "nat · 192.168.113.0/24 · gateway ..."."""
        mode = f"{self.mode} {self.bridge}" if self.bridge else self.mode
        return f"{mode} · {self.cidr} · gateway {self.gateway}"


@dataclass(frozen=True)
class KubernetesView:
    version: str
    manager: str
    network_plugin: str

    @property
    def summary(self) -> str:
        return f"{self.version} · {self.manager} · {self.network_plugin}"


@dataclass(frozen=True)
class TopologyView:
    cluster: str
    kubernetes: KubernetesView
    network: NetworkView
    vip: str | None
    virtual_router_id: int | None
    endpoint: str  # "" when DHCP assigns it
    forward_ports: tuple[ForwardedPort, ...]
    hosts: tuple[HostView, ...]
    nodes: tuple[Node, ...]  # every node, in host order then role order
    totals: Totals
    api_port: int = 6443  # the endpoint's port, as the selected load balancer serves it

    @property
    def vip_holders(self) -> tuple[Node, ...]:
        """The nodes that may hold the VIP: the load balancers, else (VIP on the masters) the masters."""
        return self.load_balancers or tuple(n for n in self.nodes if n.role == "master")

    @property
    def load_balancers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "lb")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`kubitect topology -o json`): plain data, stable keys, format-versioned."""
        return {
            "format": VIEW_FORMAT,
            "cluster": self.cluster,
            "kubernetes": vars(self.kubernetes),
            "network": {"mode": self.network.mode, "cidr": self.network.cidr, "gateway": self.network.gateway,
                        "bridge": self.network.bridge},
            "vip": self.vip,
            "virtual_router_id": self.virtual_router_id,
            "endpoint": self.endpoint or None,
            "forward_ports": [vars(p) for p in self.forward_ports],
            "hosts": [{
                "name": h.name, "default": h.default, "connection": h.connection, "user": h.user, "ip": h.ip,
                "provider": h.provider, "pools": [vars(p) for p in h.pools],
                "nodes": [n.name for n in h.nodes], "totals": h.totals.to_dict(),
            } for h in self.hosts],
            "nodes": [_node_dict(n) for n in self.nodes],
            "totals": self.totals.to_dict(),
        }


def _node_dict(node: Node) -> dict[str, Any]:
    return {"name": node.name, "role": node.role, "id": node.id, "host": node.host, "ip": node.ip,
            "mac": node.mac, "cpu": node.cpu, "ram_gib": node.ram_gib, "main_disk_gib": node.main_disk_gib,
            "data_disks": [{"name": d.name, "pool": d.pool, "size_gib": d.size_gib} for d in node.data_disks],
            "priority": node.priority, "labels": dict(node.labels), "taints": list(node.taints)}


def _role_sorted(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    return tuple(sorted(nodes, key=lambda n: ROLE_ORDER.index(n.role)))  # stable: config order within a role


def build_view(loaded: LoadedConfig) -> TopologyView:
    """The picture's content for a valid config: hosts with their nodes and totals, network, VIP."""
    config, topo = loaded.config, loaded.topology
    hosts = []
    for host in config.hosts:
        nodes = _role_sorted(topo.on_host(host.name))
        conn = host.connection
        pools = (Pool(MAIN_POOL, host.main_resource_pool_path),
                 *(Pool(p.name, p.path) for p in host.data_resource_pools))
        hosts.append(HostView(name=host.name, default=bool(host.default),
                              connection="local" if conn.is_local else "remote", user=conn.user, ip=conn.ip,
                              provider=host.provider, pools=pools, nodes=nodes, totals=totals_of(nodes)))
    net = config.cluster.network
    k8s = config.kubernetes
    lb = config.cluster.nodes.load_balancer
    ports = tuple(ForwardedPort(p.name, p.port, p.target_port or p.port, p.target) for p in lb.forward_ports)
    all_nodes = tuple(n for h in hosts for n in h.nodes)
    return TopologyView(
        cluster=topo.cluster,
        kubernetes=KubernetesView(version=str(k8s.version), manager=str(k8s.manager),
                                  network_plugin=k8s.network_plugin),
        network=NetworkView(mode=net.mode, cidr=net.cidr, gateway=str(net.gateway), bridge=net.bridge),
        vip=topo.vip, virtual_router_id=topo.virtual_router_id, endpoint=topo.endpoint,
        forward_ports=ports, hosts=tuple(hosts), nodes=all_nodes, totals=totals_of(all_nodes),
        api_port=api_port(lb.implementation),
    )


def gib(value: int) -> str:
    """Sizes as users write them in the config (GiB, whole numbers)."""
    return f"{value} GiB"


def resources_line(cpu: int, ram_gib: int) -> str:
    return f"{cpu} vCPU · {gib(ram_gib)} RAM"


def disks_line(disk_gib: dict[str, int]) -> str:
    """"main 64 GiB · data-pool 512 GiB": disk per pool, the main pool first."""
    return " · ".join(f"{pool} {gib(size)}" for pool, size in disk_gib.items()) or "none"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
