"""The flattened view of a resolved config that plugins work from.

Plugins should not re-derive node names, merged labels, default hosts or the control-plane
endpoint from the raw model: every such rule lives once, in `kubitect_core.config`, which builds
this view (`kubitect_core.config.resolve_topology`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["lb", "master", "worker"]


@dataclass(frozen=True)
class DataDisk:
    name: str
    pool: str  # "main" or the name of a dataResourcePool on the node's host
    size_gib: int


@dataclass(frozen=True)
class Node:
    role: Role
    id: str
    name: str  # "<cluster>-<role>-<id>", the VM/container/hostname
    host: str  # name of the host it runs on (the default host when the config names none)
    ip: str | None  # None: DHCP (libvirt nat only)
    mac: str | None
    cpu: int
    ram_gib: int
    main_disk_gib: int
    data_disks: tuple[DataDisk, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # defaults merged, instance wins
    taints: tuple[str, ...] = ()  # defaults merged, duplicates removed
    priority: int | None = None  # load balancers only (keepalived priority)


@dataclass(frozen=True)
class Topology:
    cluster: str
    nodes: tuple[Node, ...]
    vip: str | None
    endpoint: str  # control-plane endpoint: VIP, else the single LB's IP, else the first master's IP
    virtual_router_id: int | None  # set when keepalived runs (a VIP is configured)

    def by_role(self, role: Role) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == role)

    @property
    def load_balancers(self) -> tuple[Node, ...]:
        return self.by_role("lb")

    @property
    def masters(self) -> tuple[Node, ...]:
        return self.by_role("master")

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.by_role("worker")

    def on_host(self, host: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.host == host)
