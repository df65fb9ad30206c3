"""Control planes joining and leaving: the etcd side, with quorum checked before and after.

Why here and not in an installer: both the removal phase of an apply (masters gone from the
config) and `kubitect replace` (a failed master rebuilt) must take the node's etcd member out
the same way, and an installer adding a master must check the same arithmetic. The order is
KubeOne's and Kubespray's: a leaving control plane's etcd member is removed while the rest of
the cluster still has quorum, from a control plane that stays; draining and deleting the
Kubernetes node is the node lifecycle's job (kubitect_core.kube.node_ops), after this.

Every refusal names the numbers (members, healthy, needed) so the user sees why.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubitect_core.contracts import Change, StageContext
from kubitect_core.kube import etcd
from kubitect_core.kube.steps import node_pool
from kubitect_core.remote import NodePool, Remote, RemoteError
from kubitect_core.stage import StageError
from kubitect_core.topology import Node


async def staying_master(pool: NodePool, masters: Sequence[Node], leaving: set[str]) -> tuple[Node, Remote]:
    """The first reachable control plane that stays: etcd is asked and changed through it."""
    errors = []
    for m in masters:
        if m.name in leaving or not m.ip:
            continue
        try:
            return m, await pool.get(m.ip, name=m.name, wait=20)
        except RemoteError as exc:
            errors.append(str(exc))
    raise StageError("no control plane that stays is reachable to change etcd through"
                     + (": " + "; ".join(errors) if errors else ""))


def plan_removal(nodes: Sequence[Node]) -> list[Change]:
    """What `remove_members` would do (no SSH)."""
    return [Change("delete", "etcd-member", n.name, n.host,
                   "etcd member removed first (quorum checked before and after)")
            for n in nodes if n.role == "master"]


async def remove_member(r: Remote, node: Node, *, tls: etcd.EtcdTls = etcd.KUBEADM) -> Change:
    """Removes one leaving control plane's etcd member through `r` (a control plane that stays).

    Refused, with the numbers, when the cluster has no quorum now or would not have one after;
    a member that is already gone is reported as such (a re-run after a failure converges).
    """
    before = await etcd.endpoint_health(r, tls=tls)
    members = await etcd.member_list(r, tls=tls)
    mine = [m for m in members if m.name == node.name
            or (node.ip and etcd.peer_url(str(node.ip)) in m.peer_urls)]
    if not mine:
        return Change("keep", "etcd-member", node.name, node.host, f"not an etcd member ({before})")
    member = mine[0]
    leaving_healthy = (member.name or member.hex_id) not in before.unhealthy
    verdict = etcd.removal_verdict(before, leaving_healthy=leaving_healthy)
    if verdict:
        raise StageError(f"{node.name}: the control plane cannot be removed: {verdict}")
    await etcd.member_remove(r, member, tls=tls)
    after = await etcd.endpoint_health(r, tls=tls)
    if not after.ok:
        raise StageError(f"{node.name}: etcd lost quorum after its member was removed ({after}); "
                         "bring the unhealthy members back before anything else")
    return Change("delete", "etcd-member", node.name, node.host, f"before: {before}; after: {after}")


async def remove_members(ctx: StageContext, nodes: Sequence[Node], *, dry_run: bool,
                         tls: etcd.EtcdTls = etcd.KUBEADM) -> list[Change]:
    """Leaving control planes' etcd members, one at a time, through a control plane that stays.

    `ctx.topology` is the cluster as it will be (the leaving nodes are not in it).
    """
    leaving = [n for n in nodes if n.role == "master"]
    if not leaving:
        return []
    if dry_run:
        return plan_removal(leaving)
    names = {n.name for n in leaving}
    changes = []
    async with node_pool(ctx) as pool:
        staying, r = await staying_master(pool, ctx.topology.masters, names)
        for node in leaving:
            ctx.progress(node.name, f"removing its etcd member (through {staying.name})")
            change = await remove_member(r, node, tls=tls)
            ctx.progress(node.name, change.detail)
            changes.append(change)
    return changes


async def check_addition(r: Remote, node: Node, *, tls: etcd.EtcdTls = etcd.KUBEADM) -> etcd.Quorum:
    """Before a control plane joins an existing cluster: refuse when its member could not be added."""
    before = await etcd.endpoint_health(r, tls=tls)
    verdict = etcd.addition_verdict(before)
    if verdict:
        raise StageError(f"{node.name}: the control plane cannot join now: {verdict}")
    return before


async def check_joined(r: Remote, node: Node, *, tls: etcd.EtcdTls = etcd.KUBEADM) -> etcd.Quorum:
    """After a control plane joined: its member is started and the cluster has quorum."""
    after = await etcd.endpoint_health(r, tls=tls)
    names = {m.name for m in await etcd.member_list(r, tls=tls)}
    if node.name not in names or not after.ok or node.name in after.unhealthy:
        raise StageError(f"{node.name}: joined, but etcd is not healthy with its member ({after})")
    return after
