"""Built-in plugin `libvirt`: the VM provider behind the network, storage and vms stages.

Loaded through the `kubitect` entry-point group like any third-party plugin. libvirt-python is
an optional dependency (`kubitect[libvirt]`): without it the provider is still listed, and its
preflight and every call say what to install instead of failing at import time.
"""

from __future__ import annotations

from typing import Any

from kubitect_core.sdk import hookimpl

_PROVIDER: Any = None


class _Unavailable:
    """Stands in for the provider when libvirt-python cannot be imported."""

    name = "libvirt"

    def __init__(self, reason: str):
        self.reason = f"the libvirt provider needs libvirt-python (pip install 'kubitect[libvirt]'): {reason}"

    async def preflight(self, ctx, hosts):
        return [self.reason]

    async def plan(self, layer, ctx, hosts):
        raise RuntimeError(self.reason)

    apply = destroy = plan


def provider() -> Any:
    """The process-wide provider instance (its connections live for the whole run)."""
    global _PROVIDER
    if _PROVIDER is None:
        try:
            from .provider import LibvirtProvider
        except ImportError as exc:  # libvirt-python missing or its C library unusable
            return _Unavailable(str(exc))
        _PROVIDER = LibvirtProvider()
    return _PROVIDER


@hookimpl
def kubitect_vm_providers() -> dict[str, Any]:
    """Offers the `libvirt` provider (selected by `hosts[].provider`, the default)."""
    return {"libvirt": provider()}
