"""Defaults that depend on other fields, and the flattened topology plugins work from.

Derived defaults are written without marking the field as set, so
`model_dump(exclude_unset=True)` still gives back what the user wrote.
"""

from __future__ import annotations

import ipaddress
import zlib
from typing import Any

from kubitect_core.config import versions
from kubitect_core.config.context import ValidationContext
from kubitect_core.config.models import Config, NodeInstance, Resources
from kubitect_core.topology import DataDisk, Node, Topology, control_plane_endpoint

BUILTIN_CPU, BUILTIN_RAM_GIB, BUILTIN_DISK_GIB = 2, 4, 32
DEFAULT_LB_PRIORITY = 10

# distro -> (image source, NIC inside the VM)
DISTRO_PRESETS: dict[str, tuple[str, str]] = {
    "ubuntu20": ("https://cloud-images.ubuntu.com/releases/focal/release/"
                 "ubuntu-20.04-server-cloudimg-amd64.img", "ens3"),
    "ubuntu22": ("https://cloud-images.ubuntu.com/releases/jammy/release/"
                 "ubuntu-22.04-server-cloudimg-amd64.img", "ens3"),
    "ubuntu24": ("https://cloud-images.ubuntu.com/releases/noble/release/"
                 "ubuntu-24.04-server-cloudimg-amd64.img", "ens3"),
    "debian11": ("https://cloud.debian.org/images/cloud/bullseye/latest/debian-11-genericcloud-amd64.qcow2",
                 "ens3"),
    "debian12": ("https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
                 "ens3"),
    "debian13": ("https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2",
                 "ens3"),
    "centos9": ("https://cloud.centos.org/centos/9-stream/x86_64/images/"
                "CentOS-Stream-GenericCloud-9-latest.x86_64.qcow2", "eth0"),
    "rocky9": ("https://dl.rockylinux.org/pub/rocky/9/images/x86_64/"
               "Rocky-9-GenericCloud-Base.latest.x86_64.qcow2", "eth0"),
}


def default_virtual_router_id(cluster_name: str) -> int:
    """1-255 from a stable hash (CRC-32) of the cluster name: same name, same VRID, every run.

    Python's hash() is salted per process and would change the VRID between runs; two clusters
    on one L2 segment now differ by default (the original always used 51).
    """
    return zlib.crc32(cluster_name.encode()) % 255 + 1


def _fill(model: Any, name: str, value: Any) -> None:
    """Sets a derived default without adding it to the model's fields_set."""
    model.__dict__[name] = value


def fill_defaults(config: Config, context: ValidationContext) -> Config:
    """Writes every derived default into a validated config (in place) and returns it.

    The implementations a config leaves out (a host's provider, the load balancer, the manager)
    are the installed plugins' defaults (`context.defaults`); validation has already refused a
    config that needs a default no single plugin claims.
    """
    hosts = config.hosts
    if hosts and not any(h.default for h in hosts):
        _fill(hosts[0], "default", True)
    for host in hosts:
        if host.provider is None:
            _fill(host, "provider", context.default("provider").name)
    default_host = config.default_host.name
    net = config.cluster.network
    if net.gateway is None:
        network = ipaddress.IPv4Network(net.cidr, strict=False)
        _fill(net, "gateway", str(next(network.hosts())))
    os_ = config.cluster.node_template.os
    source, nic = DISTRO_PRESETS[os_.distro]
    if os_.source is None:
        _fill(os_, "source", source)
    if os_.network_interface is None:
        _fill(os_, "network_interface", nic)
    nodes = config.cluster.nodes
    lb = nodes.load_balancer
    if lb.implementation is None:
        _fill(lb, "implementation", context.default("load_balancer").name)
    if lb.virtual_router_id is None:
        _fill(lb, "virtual_router_id", default_virtual_router_id(config.cluster.name))
    for port in lb.forward_ports:
        if port.target_port is None:
            _fill(port, "target_port", port.port)
    for default, instances in ((lb.default, lb.instances), (nodes.master.default, nodes.master.instances),
                               (nodes.worker.default, nodes.worker.instances)):
        _fill_resources(default, None)
        for inst in instances:
            _fill_resources(inst, default)
            if inst.host is None:
                _fill(inst, "host", default_host)
    k8s = config.kubernetes
    if k8s.manager is None or k8s.manager in context.manager_aliases:
        _fill(k8s, "manager", context.effective_manager(k8s.manager))
    _fill(k8s, "version", versions.normalize(k8s.version or versions.DEFAULT_KUBERNETES_VERSION))
    return config


def _fill_resources(target: Resources, default: Resources | None) -> None:
    for name, builtin in (("cpu", BUILTIN_CPU), ("ram", BUILTIN_RAM_GIB), ("main_disk_size", BUILTIN_DISK_GIB)):
        if getattr(target, name) is None:
            inherited = getattr(default, name) if default is not None else None
            _fill(target, name, inherited if inherited is not None else builtin)


def _merged_taints(default: list[str], own: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*default, *own]))


def resolve_topology(config: Config) -> Topology:
    """The flat node list, endpoint, VIP and VRID of a validated config (defaults resolved here too).

    Every placement and naming rule lives here once, so plugins never re-derive them.
    """
    name = config.cluster.name
    default_host = config.default_host.name
    nodes_cfg = config.cluster.nodes
    lb = nodes_cfg.load_balancer
    nodes: list[Node] = []

    def resources(inst: Any, default: Any) -> tuple[int, int, int]:
        out = []
        for attr, builtin in (("cpu", BUILTIN_CPU), ("ram", BUILTIN_RAM_GIB),
                              ("main_disk_size", BUILTIN_DISK_GIB)):
            value = getattr(inst, attr)
            if value is None:
                value = getattr(default, attr)
            out.append(value if value is not None else builtin)
        return out[0], out[1], out[2]

    for inst in lb.instances:
        cpu, ram, disk = resources(inst, lb.default)
        nodes.append(Node(role="lb", id=inst.id, name=f"{name}-lb-{inst.id}", host=inst.host or default_host,
                          ip=inst.ip, mac=inst.mac, cpu=cpu, ram_gib=ram, main_disk_gib=disk,
                          priority=inst.priority if inst.priority is not None else DEFAULT_LB_PRIORITY))
    for role, section in (("master", nodes_cfg.master), ("worker", nodes_cfg.worker)):
        default = section.default
        for inst in section.instances:
            nodes.append(_k8s_node(name, role, inst, default, default_host, resources(inst, default)))
    endpoint = control_plane_endpoint(lb.vip, nodes)
    vrid = None
    if lb.vip:
        vrid = lb.virtual_router_id if lb.virtual_router_id is not None else default_virtual_router_id(name)
    return Topology(cluster=name, nodes=tuple(nodes), vip=lb.vip, endpoint=endpoint, virtual_router_id=vrid)


def _k8s_node(cluster: str, role: str, inst: NodeInstance, default: Any, default_host: str,
              res: tuple[int, int, int]) -> Node:
    labels = {**default.labels, **inst.labels}
    disks = tuple(DataDisk(name=d.name, pool=d.pool, size_gib=d.size) for d in [*default.data_disks,
                                                                                   *inst.data_disks])
    return Node(role=role, id=inst.id, name=f"{cluster}-{role}-{inst.id}", host=inst.host or default_host,
                ip=inst.ip, mac=inst.mac, cpu=res[0], ram_gib=res[1], main_disk_gib=res[2],
                data_disks=disks, labels=labels, taints=_merged_taints(default.taints, inst.taints))
