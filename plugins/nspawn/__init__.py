"""Built-in plugin `nspawn`: nodes as systemd-nspawn containers (real systemd, real sshd).

Selected per host with `hosts[].provider: nspawn`. Loaded through the `kubitect` entry-point
group exactly like a third-party plugin.
"""

from __future__ import annotations

from kubitect_core.sdk import hookimpl

from .provider import NspawnProvider

__all__ = ["NspawnProvider", "kubitect_vm_providers"]


@hookimpl
def kubitect_vm_providers() -> dict[str, NspawnProvider]:
    """Offers the `nspawn` provider."""
    return {"nspawn": NspawnProvider()}
