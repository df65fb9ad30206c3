"""Installer steps both built-in installers take the same way, around their own technology.

Each installer keeps what is its own (packages and `kubeadm init/join`, or the k3s binary and
units) and calls these for the common parts: the SSH pool, the first master, restricted labels,
the CNI, and the teardown order.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from kubitect_core.contracts import Change, StageContext
from kubitect_core.kube.admin_kubeconfig import drop_kubeconfig
from kubitect_core.kube.cluster import cluster_nodes, pod_and_service_cidrs, split_labels
from kubitect_core.kube.cni import CNIS
from kubitect_core.kube.sources import SOURCE_UPSTREAM, node_unreachable_reason, probe_timeout, source
from kubitect_core.remote import NodePool, Remote, RemoteError
from kubitect_core.stage import StageError
from kubitect_core.topology import Node


def node_pool(ctx: StageContext) -> NodePool:
    """The SSH pool an installer run uses, bounded by option `parallel` (default 8)."""
    return NodePool.from_access(ctx.ssh, limit=int(ctx.options.get("parallel", 8)))


async def first_master(ctx: StageContext, pool: NodePool, what: str, urls: list[str]) -> Remote:
    """Connects to the first master; when downloading, checks that it reaches `urls` first.

    Why before anything else: a node that cannot download must fail the run before any node
    was changed, naming the source (`what`) it cannot reach.
    """
    master = ctx.topology.masters[0]
    first = await pool.get(master.ip, name=master.name, wait=60)
    if source(ctx) == SOURCE_UPSTREAM:
        ctx.progress(master.name, f"checking that {what} is reachable")
        reason = await node_unreachable_reason(first, urls, probe_timeout(ctx))
        if reason:
            raise StageError(reason)
    return first


async def apply_restricted_labels(ctx: StageContext, first: Remote, kubectl: str) -> list[Change]:
    """Sets with kubectl the labels a kubelet may not register itself, and records them.

    Why: NodeRestriction refuses kubernetes.io labels from kubelets (see `kubelet_may_set`).
    """
    changes = []
    for node in cluster_nodes(ctx):
        _, later = split_labels(node)
        if not later:
            continue
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in later.items())
        await first.run(f"{kubectl} label node {shlex.quote(node.name)} --overwrite {pairs}", sudo=True, timeout=60)
        changes.append(Change("keep" if ctx.record.get("labels", {}).get(node.name) == later else "change",
                              "labels", node.name, node.host, ", ".join(later)))
        ctx.record.setdefault("labels", {})[node.name] = later
    return changes


async def install_cni(ctx: StageContext, first: Remote, kubectl: str, admin_kubeconfig: str,
                      cidr_defaults: tuple[str, str], *, announce: bool = True) -> list[Change]:
    """Installs the configured CNI once (recorded name + version), with a pod CIDR free of the node network.

    `cidr_defaults` are the installer's (pod, service) defaults; `announce` reports the step.
    """
    cni = CNIS[ctx.config.kubernetes.network_plugin]
    want = {"name": cni.name, "version": cni.version}
    if ctx.record.get("cni") == want:
        return [Change("keep", "cni", cni.name, None, cni.version)]
    if announce:
        ctx.progress(ctx.topology.masters[0].name, f"installing the CNI {cni.name} {cni.version}")
    pod, _ = pod_and_service_cidrs(ctx, *cidr_defaults)
    for cmd in cni.commands(kubectl, admin_kubeconfig, pod):
        await first.run(cmd, sudo=True, timeout=600)
    ctx.record["cni"] = want
    ctx.checkpoint()
    return [Change("create", "cni", cni.name, None, cni.version)]


async def remove_from_nodes(ctx: StageContext, remove: Callable[[Node, Remote], Awaitable[Change]]) -> list[Change]:
    """Runs `remove` on every reachable node: workers concurrently, then masters last-joined first.

    Unreachable nodes are reported, not fatal: their VMs are about to be deleted anyway. When the
    whole cluster is being destroyed (`machines_deleted`), the machines go right after this stage,
    so resetting each node would only cost time: nothing is run on them.
    """
    if ctx.options.get("machines_deleted"):
        return []
    async with node_pool(ctx) as pool:
        async def one(node: Node) -> Change:
            try:
                return await remove(node, await pool.get(node.ip, name=node.name))
            except RemoteError as exc:
                return Change("keep", "node", node.name, node.host, f"unreachable, skipped: {exc}")
        changes = await pool.each(list(ctx.topology.workers), one)
        for node in reversed(ctx.topology.masters):
            changes.append(await one(node))
    return changes


def forget_installation(ctx: StageContext, secret_file: Path, what: str, keys: Iterable[str]) -> list[Change]:
    """Destroy's local half: the kubeconfig (and its merge), the secrets file, the record `keys`."""
    changes = []
    notes = drop_kubeconfig(ctx)
    if notes:
        changes.append(Change("delete", "file", "kubeconfig", None, "; ".join(notes)))
    if secret_file.exists():
        secret_file.unlink()
        changes.append(Change("delete", "file", what, None, str(secret_file)))
    for key in keys:
        ctx.record.pop(key, None)
    ctx.checkpoint()
    return changes
