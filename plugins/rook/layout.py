"""Which nodes Rook uses and how many daemons and replicas follow from them (pure, no I/O).

Candidates are the workers, or the masters when there are none (as in Kubitect); the
nodeSelector keeps those whose merged labels carry every key with the same value (an empty value
means "the key is present"); OSD nodes are the kept ones with dataDisks. The validation rule
`addons.rook.enabled` applies the same selection to the raw config, so a config that validates
always yields at least one OSD node here.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubitect_core.sdk import Node, Topology, data_disk_by_id, data_disk_serial

NAMESPACE = "rook-ceph"
CLUSTER_NAME = "rook-ceph"


@dataclass(frozen=True)
class OsdNode:
    name: str  # the Kubernetes node name (= hostname = topology node name)
    devices: tuple[tuple[str, str, int], ...]  # (disk name, /dev/disk/by-id path, GiB)


@dataclass(frozen=True)
class Layout:
    osd_nodes: tuple[OsdNode, ...]
    mon: int
    mgr: int
    replicas: int
    on_masters: bool  # no workers: the daemons must tolerate the control-plane taint

    @property
    def min_size(self) -> int:
        return max(self.replicas - 1, 1)

    @property
    def osd_count(self) -> int:
        return sum(len(n.devices) for n in self.osd_nodes)


def selected(node: Node, selector: dict[str, str]) -> bool:
    return all(k in node.labels and (v == "" or node.labels[k] == v) for k, v in selector.items())


def layout(topology: Topology, selector: dict[str, str]) -> Layout:
    """OSD nodes with their by-id devices, and the counts.

    mon 3 with three or more OSD nodes, else 1 (never 2: two monitors tolerate no more failures
    than one and need both for quorum); mgr 2 with two or more, else 1; replicas min(3, nodes),
    since failureDomain is host and a replica needs a host of its own.
    """
    on_masters = not topology.workers
    candidates = topology.masters if on_masters else topology.workers
    osd = tuple(
        OsdNode(n.name, tuple((d.name, data_disk_by_id(data_disk_serial(topology.cluster, n.name, d.name)), d.size_gib)
                              for d in n.data_disks))
        for n in candidates if selected(n, selector) and n.data_disks)
    count = len(osd)
    return Layout(osd_nodes=osd, mon=3 if count >= 3 else 1, mgr=2 if count >= 2 else 1,
                  replicas=min(3, count), on_masters=on_masters)
