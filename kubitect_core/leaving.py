"""The removal phase of an apply: nodes gone from the config leave the cluster before their machines go.

Runs before the machine stages (which delete the VMs of nodes no longer in the config), in this
order: the `kubitect_nodes_leaving` hook (plugins move data or duties away, e.g. Ceph OSDs), then
the installer's `remove_nodes` (cordon, drain, stop the kubelet, delete the Node), then the
machine stages. A failure stops the apply before any machine is deleted; the leaving nodes are
still recorded by the vms stage, so the re-run finds them again and converges.

Cheap when there is nothing to do: leaving nodes come from the record and the config alone (no
SSH), and the installer is asked only when its stage ever installed Kubernetes and the leaving
nodes include members it recorded. Scaling down machines that never ran Kubernetes (the libvirt
test driver benchmark) costs a set difference.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kubitect_core.contracts import Change, StageContext
from kubitect_core.stage import Stage, StageError
from kubitect_core.topology import Node, Topology, as_built, recorded_nodes

_NAME = re.compile(r"(?P<cluster>.+)-(?P<role>master|worker|lb)-(?P<id>[^-]+)")


def gone_names(new: Topology, vms_record: Mapping[str, Any]) -> list[str]:
    """Names of the nodes the vms stage recorded that the new config no longer has (cheap: no I/O)."""
    keep = {n.name for n in new.nodes}
    return sorted(name for name in recorded_nodes(vms_record) if name not in keep)


def leaving_nodes(new: Topology, old: Topology | None, vms_record: Mapping[str, Any]) -> list[Node]:
    """Nodes the vms stage recorded that the new config no longer has, as built.

    `old` (the last applied config's topology) gives their role, labels and data disks; without
    it (the applied config cannot be read) the role comes from the node name.
    """
    gone = gone_names(new, vms_record)
    if not gone:
        return []
    recorded = recorded_nodes(vms_record)
    known: dict[str, Node] = {}
    if old is not None:  # only the leaving nodes are laid over (a scale-in of 1,000 of 2,000 stays cheap)
        leaving = set(gone)
        sub = replace(old, nodes=tuple(n for n in old.nodes if n.name in leaving))
        known = {n.name: n for n in as_built(sub, {k: recorded[k] for k in gone}).nodes}
    out = []
    for name in gone:
        node = known.get(name)
        if node is None:
            rec = recorded[name]
            m = _NAME.fullmatch(name)
            node = Node(role=m.group("role") if m else "worker", id=m.group("id") if m else name, name=name,
                        host=str(rec.get("host") or ""), ip=rec.get("ip"), mac=rec.get("mac"), cpu=0, ram_gib=0,
                        main_disk_gib=0, domain=rec.get("domain"))
        out.append(node)
    return out


class NodesLeaving(Stage):
    """The removal phase, run by the engine (not a pipeline stage): reported as 'remove-nodes'.

    `ctx` is the kubernetes stage's context, as the hook promises; `nodes` the leaving nodes.
    """

    name = "remove-nodes"
    description = "nodes removed from the config: plugins make way, the installer drains and deletes them"

    def __init__(self, nodes: list[Node], kube_ran: bool) -> None:
        self.nodes, self.kube_ran = nodes, kube_ran

    async def _run(self, ctx: StageContext, registry, dry_run: bool) -> list[Change]:
        changes: list[Change] = []
        for result in registry.pm.hook.kubitect_nodes_leaving(ctx=ctx, nodes=list(self.nodes), dry_run=dry_run):
            if inspect.isawaitable(result):  # an `async def` implementation: SSH work needs the event loop
                result = await result
            changes += list(result or [])
        if not self.kube_ran or ctx.config is None:
            return changes
        joined = ctx.record.get("nodes") or {}
        members = [n for n in self.nodes if n.role in ("master", "worker") and n.name in joined]
        if not members:
            return changes
        installer = registry.installers.get(ctx.config.kubernetes.manager)
        remove = getattr(installer, "remove_nodes", None)
        if remove is None:
            raise StageError(
                f"the installer '{ctx.config.kubernetes.manager}' cannot take nodes out of the cluster "
                f"(it has no remove_nodes), so {', '.join(n.name for n in members)} would be deleted without a "
                "drain; keep them in the config, or use an installer that can remove nodes")
        return changes + list(await remove(ctx, members, dry_run) or [])

    async def plan(self, ctx, registry):
        return await self._run(ctx, registry, True)

    async def apply(self, ctx, registry):
        return await self._run(ctx, registry, False)
