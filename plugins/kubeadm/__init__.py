"""Built-in plugin 'kubeadm': Kubernetes installed with kubeadm (the default `kubernetes.manager`).

Registered through the `kubitect` entry-point group like any third-party installer. The stage
or the lab demo may call `internet_reason(ctx)` first: None when the package repository is
reachable, else a message naming what could not be reached.
"""

from __future__ import annotations

from kubitect_core.sdk import Change, Node, StageContext, etcd, hookimpl

from .plugin import KubeadmInstaller, ca_cert_hash, internet_reason

__all__ = ["KubeadmInstaller", "ca_cert_hash", "internet_reason", "kubitect_installers", "kubitect_nodes_leaving"]


@hookimpl
def kubitect_installers() -> dict:
    """The kubeadm installer, selected by `kubernetes.manager: kubeadm` (or the legacy `kubespray`)."""
    return {"kubeadm": KubeadmInstaller()}


@hookimpl
async def kubitect_nodes_leaving(ctx: StageContext, nodes: list[Node], dry_run: bool) -> list[Change]:
    """Leaving control planes of a kubeadm cluster: their etcd members go first, one at a time,
    through a control plane that stays, refused (with the numbers) if quorum would be lost."""
    if ctx.config is None or ctx.config.kubernetes.manager not in ("kubeadm", "kubespray"):
        return []
    joined = ctx.record.get("nodes") or {}
    masters = [n for n in nodes if n.role == "master" and n.name in joined]
    return await etcd.remove_control_plane_members(ctx, masters, dry_run=dry_run)
