"""Built-in plugin 'kubeadm': Kubernetes installed with kubeadm (the default `kubernetes.manager`).

Registered through the `kubitect` entry-point group like any third-party installer. The stage
or the lab demo may call `internet_reason(ctx)` first: None when the package repository is
reachable, else a message naming what could not be reached.
"""

from __future__ import annotations

from kubitect_core.sdk import hookimpl

from .plugin import KubeadmInstaller, ca_cert_hash, internet_reason

__all__ = ["KubeadmInstaller", "ca_cert_hash", "internet_reason", "kubitect_installers"]


@hookimpl
def kubitect_installers() -> dict:
    """The kubeadm installer, selected by `kubernetes.manager: kubeadm` (or the legacy `kubespray`)."""
    return {"kubeadm": KubeadmInstaller()}
