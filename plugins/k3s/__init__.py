"""Built-in plugin 'k3s': Kubernetes installed as k3s (`kubernetes.manager: k3s`).

Registered through the `kubitect` entry-point group like any third-party installer.
`internet_reason(ctx)` tells the stage or the lab demo up front whether the release binary can
be downloaded (None) or what could not be reached.
"""

from __future__ import annotations

from kubitect_core.sdk import hookimpl

from .plugin import K3sInstaller, internet_reason

__all__ = ["K3sInstaller", "internet_reason", "kubitect_installers"]


@hookimpl
def kubitect_installers() -> dict:
    """The k3s installer."""
    return {"k3s": K3sInstaller()}
