"""The flattened view of a cluster that plugins work from: the config's, then the as-built one.

Plugins should not re-derive node names, merged labels, default hosts or the control-plane
endpoint from the raw model: every such rule lives once, in `kubitect_core.config`, which builds
this view (`kubitect_core.config.resolve_topology`).

Once the vms stage has made machines, what exists can differ from what the config says: a node
without a configured IP (DHCP, nat mode) has the address its provider read back from the lease.
`as_built` lays what the providers recorded over the config's topology; the engine hands that to
every stage after vms as `StageContext.topology`, so no plugin reads addresses from anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Role = Literal["lb", "master", "worker"]


@dataclass(frozen=True)
class DataDisk:
    name: str
    pool: str  # "main" or the name of a dataResourcePool on the node's host
    size_gib: int


# virtio-blk hands the guest at most 20 bytes of serial (VIRTIO_BLK_ID_BYTES); QEMU cuts the rest.
DISK_SERIAL_MAX = 20
_DISK_SERIAL_HEAD = 11  # readable part: the disk name's start; the rest is a digest


def data_disk_serial(cluster: str, node: str, disk: str) -> str:
    """The serial a data disk carries, so the guest sees it at /dev/disk/by-id/virtio-<serial>.

    Why: device names (vdb, vdc) follow attach order and change when a disk is added or removed;
    Rook must be told exactly which disks are its OSDs. The serial starts with the disk name
    (readable in `lsblk -o NAME,SERIAL`) and ends with a digest of cluster, node and disk name,
    so it is stable across re-applies and host moves, distinct between a node's disks (distinct
    names hash apart; `check_serials_distinct` guards the residual chance) and between clusters,
    and fits virtio's 20 bytes (at least 8 base32 digest characters: 40 bits).
    """
    head = disk[:_DISK_SERIAL_HEAD]
    digest = base64.b32encode(hashlib.sha256(f"{cluster}/{node}/{disk}".encode()).digest()).decode().lower()
    return f"{head}-{digest[:DISK_SERIAL_MAX - len(head) - 1]}"


def data_disk_by_id(serial: str) -> str:
    """Where a Linux guest's udev links a virtio disk with this serial (60-persistent-storage.rules)."""
    return f"/dev/disk/by-id/virtio-{serial}"


def check_serials_distinct(cluster: str, node: str, disks: Iterable[str]) -> dict[str, str]:
    """{disk name: serial} of one node; ValueError if two disks would share a serial (never seen)."""
    serials = {d: data_disk_serial(cluster, node, d) for d in disks}
    if len(set(serials.values())) != len(serials):
        raise ValueError(f"node {node}: two data disks would get the same serial ({serials}); rename one")
    return serials


@dataclass(frozen=True)
class Node:
    role: Role
    id: str
    name: str  # "<cluster>-<role>-<id>", the VM/container/hostname
    host: str  # name of the host it runs on (the default host when the config names none)
    # The address: the config's, or for a DHCP node the lease its provider recorded (as-built).
    # None: not known yet (a DHCP node before the vms stage recorded it).
    ip: str | None
    mac: str | None  # the config's, or (as-built) the MAC the provider recorded
    cpu: int
    ram_gib: int
    main_disk_gib: int
    data_disks: tuple[DataDisk, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # defaults merged, instance wins
    taints: tuple[str, ...] = ()  # defaults merged, duplicates removed
    priority: int | None = None  # load balancers only (keepalived priority)
    # The machine's name on its host (libvirt domain, nspawn machine) as the provider recorded it;
    # None until the vms stage made the node.
    domain: str | None = None
    # The config gives no IP: the address comes from the cluster network's DHCP (libvirt nat mode).
    # Left unset, it follows `ip` (None -> True); it stays True once the lease is recorded.
    dhcp: bool | None = None

    def __post_init__(self) -> None:
        if self.dhcp is None:
            object.__setattr__(self, "dhcp", self.ip is None)

    @property
    def address(self) -> str:
        """The IP, or a phrase saying why there is none yet (for plans and messages)."""
        if self.ip:
            return self.ip
        return "address assigned by DHCP" if self.dhcp else "no address"


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


def control_plane_endpoint(vip: str | None, nodes: Iterable[Node]) -> str:
    """The API server address clients use: the VIP, else the one load balancer's IP, else the
    first master's IP; "" while that node's address is unknown (DHCP before the vms stage)."""
    if vip:
        return vip
    nodes = tuple(nodes)
    lbs = [n for n in nodes if n.role == "lb"]
    masters = [n for n in nodes if n.role == "master"]
    if len(lbs) == 1:
        return lbs[0].ip or ""
    return (masters[0].ip or "") if masters else ""


class RecordError(ValueError):
    """The vms stage's record holds a value that cannot be an address, MAC or name (hand-edited?)."""


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# What the engine reads from each node record of the vms stage (see contracts.VmProvider).
RECORDED_KEYS = ("name", "host", "ip", "mac", "domain")


def recorded_nodes(vms_record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Node records of the vms stage by node name, across its per-provider slices.

    The vms stage keeps one slice per provider (`{<provider>: {"nodes": {<node>: {...}}}}`), so
    two providers in one cluster never overwrite each other; the nodes are unique across them.
    """
    found: dict[str, Mapping[str, Any]] = {}
    if not isinstance(vms_record, Mapping):  # a damaged record: nothing was recorded that can be used
        return found
    for slice_ in vms_record.values():
        nodes = slice_.get("nodes") if isinstance(slice_, Mapping) else None
        if isinstance(nodes, Mapping):
            found.update({name: rec for name, rec in nodes.items() if isinstance(rec, Mapping)})
    return found


def _checked(node: str, key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).lower() if key == "mac" else str(value)
    ok = {"ip": lambda v: _is_ipv4(v), "mac": lambda v: _MAC.fullmatch(v) is not None}.get(
        key, lambda v: _NAME.fullmatch(v) is not None)(text)
    if not ok:
        raise RecordError(f"the vms stage recorded {key} {text!r} for node {node}, which is not a valid "
                          f"{'IPv4 address' if key == 'ip' else 'MAC address' if key == 'mac' else 'name'}; "
                          "run the vms stage again (kubitect run --stage vms) to record it afresh")
    return text


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def as_built(topology: Topology, recorded: Mapping[str, Mapping[str, Any]]) -> Topology:
    """The topology with what the providers recorded per node: ip, mac, host and domain.

    A recorded value wins over the config's: it is what exists (a static node's values agree with
    the config anyway; the change rules refuse editing them). Nodes the vms stage never recorded
    keep the config's values (a DHCP node's ip stays None). The endpoint follows the addresses.
    Raises RecordError for a recorded value that is not an address, MAC or name.
    """
    nodes = []
    for node in topology.nodes:
        rec = recorded.get(node.name)
        if not rec:
            nodes.append(node)
            continue
        values = {k: _checked(node.name, k, rec.get(k)) for k in ("ip", "mac", "host", "domain")}
        nodes.append(replace(node, ip=values["ip"] or node.ip, mac=values["mac"] or node.mac,
                             host=values["host"] or node.host,
                             domain=values["domain"] or _checked(node.name, "name", rec.get("name")) or node.domain))
    return replace(topology, nodes=tuple(nodes),
                   endpoint=control_plane_endpoint(topology.vip, nodes) or topology.endpoint)
