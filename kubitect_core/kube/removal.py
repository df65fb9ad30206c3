"""Taking Kubernetes nodes out of a cluster before their machines are deleted (scale-in).

Shared by the installers (`remove_nodes` of kubeadm and k3s differ only in how kubectl is
called and how the node's own agent is stopped). The order is the one Kubespray's
remove-node playbook and the kubeadm documentation give, so no workload is cut off:

1. every leaving node is cordoned first, so pods evicted from one leaving node never land on
   another leaving node;
2. each node is drained in turn (PodDisruptionBudgets respected, a timeout, a clear error
   naming the pods that block; draining one at a time keeps the capacity the evicted pods need);
3. its kubelet (or k3s agent) is stopped, so it cannot register the node again;
4. `kubectl delete node`.

Each node's removal is recorded (checkpoint) as soon as it is done: a run that fails at one
node stops before any machine is deleted, and the re-run starts again with the nodes left
(cordon, drain and delete of a node that is already gone are no-ops).
"""

from __future__ import annotations

from collections.abc import Callable

from kubitect_core.contracts import Change, StageContext
from kubitect_core.kube import node_ops
from kubitect_core.kube.steps import node_pool
from kubitect_core.remote import RemoteError
from kubitect_core.stage import StageError
from kubitect_core.topology import Node

DRAIN_TIMEOUT = 300.0  # seconds; Kubespray drains with --timeout 360s, KubeOne without one


def drain_timeout(ctx: StageContext) -> float:
    """Seconds one node's drain may take (option `drain_timeout`, CLI `--drain-timeout`)."""
    return float(ctx.options.get("drain_timeout") or DRAIN_TIMEOUT)


def members(ctx: StageContext, nodes: list[Node]) -> list[Node]:
    """The leaving nodes this installer made Kubernetes members of (its record says so)."""
    joined = ctx.record.get("nodes") or {}
    return [n for n in nodes if n.role in ("master", "worker") and n.name in joined]


def removal_plan(ctx: StageContext, nodes: list[Node]) -> list[Change]:
    """What `remove_members` would do, from the record only (no SSH)."""
    seconds = drain_timeout(ctx)
    return [Change("delete", "node", n.name, n.host,
                   f"cordon, drain (PodDisruptionBudgets respected, timeout {seconds:g}s), stop the kubelet, "
                   "kubectl delete node")
            for n in members(ctx, nodes)]


async def remove_members(ctx: StageContext, nodes: list[Node], *, kubectl_prefix: str,
                         stop_agent: Callable[[Node], str]) -> list[Change]:
    """Cordons, drains, stops and deletes the leaving member nodes (see the module docstring).

    `kubectl_prefix` runs kubectl with cluster-admin rights on a remaining control plane;
    `stop_agent(node)` is the shell command that stops the node's kubelet / k3s agent (run with
    sudo on the node, best effort: an unreachable node is already not running pods).
    """
    leaving = members(ctx, nodes)
    if not leaving:
        return []
    names = {n.name for n in leaving}
    staying = [m for m in ctx.topology.masters if m.ip and m.name not in names]
    if not staying:
        raise StageError("no remaining control plane with a known address to run kubectl on; "
                         "the nodes cannot be drained")
    seconds = drain_timeout(ctx)
    changes: list[Change] = []
    async with node_pool(ctx) as pool:
        master = staying[0]
        kubectl = node_ops.RemoteKubectl(await pool.get(master.ip, name=master.name, wait=60), kubectl_prefix)
        present = []
        for node in leaving:
            ctx.progress(node.name, "cordoning")
            try:
                await node_ops.cordon(kubectl, node.name)
                present.append(node)
            except node_ops.NodeNotFound:
                _forget(ctx, node)
                changes.append(Change("keep", "node", node.name, node.host, "already gone from the cluster"))
        for node in present:
            ctx.progress(node.name, f"draining (timeout {seconds:g}s)")
            await node_ops.drain(kubectl, node.name, seconds)
            if node.ip:
                ctx.progress(node.name, "stopping the kubelet")
                try:
                    remote = await pool.get(node.ip, name=node.name)
                    await remote.run(stop_agent(node), sudo=True, check=False, timeout=120)
                except RemoteError as exc:
                    ctx.progress(node.name, f"not reachable, kubelet not stopped: {exc}")
            ctx.progress(node.name, "deleting the Kubernetes node")
            await node_ops.delete_node(kubectl, node.name)
            _forget(ctx, node)
            changes.append(Change("delete", "node", node.name, node.host, "cordoned, drained, kubectl delete node"))
    return changes


def _forget(ctx: StageContext, node: Node) -> None:
    (ctx.record.get("nodes") or {}).pop(node.name, None)
    (ctx.record.get("labels") or {}).pop(node.name, None)
    ctx.checkpoint()
