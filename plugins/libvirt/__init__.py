"""Built-in plugin `libvirt`: the VM provider behind the network, storage and vms stages.

Loaded through the `kubitect` entry-point group like any third-party plugin. libvirt-python is
an optional dependency (`kubitect[libvirt]`): without it the provider is still listed, and its
preflight and every call say what to install instead of failing at import time.

This entry module defines only the hook and private names: a public name equal to a submodule's
(it once had a function `provider()`) is replaced by that submodule as soon as the submodule is
imported, and the next registry load in the process would call a module.
"""

from __future__ import annotations

import importlib.util

from kubitect_core.sdk import Change, StageContext, StageError, VmProvider, hookimpl

_INSTANCE: VmProvider | None = None


class _UnavailableLayer:
    """A layer of the stand-in provider: every call says what to install."""

    def __init__(self, reason: str):
        self.reason = reason

    async def plan(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        raise StageError(self.reason)

    apply = destroy = plan


class _Unavailable:
    """Stands in for the provider when libvirt-python cannot be imported."""

    name = "libvirt"
    default = True  # still the default: a host without `provider` is told what to install

    def __init__(self, reason: str):
        self.reason = f"the libvirt provider needs libvirt-python (pip install 'kubitect[libvirt]'): {reason}"
        self.network = self.storage = self.vms = _UnavailableLayer(self.reason)

    async def preflight(self, ctx: StageContext, hosts: list[str]) -> list[str]:
        return [self.reason]


def _instance() -> VmProvider:
    """The process-wide provider instance (its connections live for the whole run)."""
    global _INSTANCE
    if _INSTANCE is None:
        # libvirt-python itself loads on first use (fast start), so ask whether it is installed
        # without importing it; a C library that then fails to load is reported at that use.
        if importlib.util.find_spec("libvirt") is None:
            return _Unavailable("No module named 'libvirt'")
        try:
            from .provider import LibvirtProvider
        except ImportError as exc:
            return _Unavailable(str(exc))
        _INSTANCE = LibvirtProvider()
    return _INSTANCE


@hookimpl
def kubitect_vm_providers() -> dict[str, VmProvider]:
    """Offers the `libvirt` provider (selected by `hosts[].provider`; the default when omitted)."""
    return {"libvirt": _instance()}
