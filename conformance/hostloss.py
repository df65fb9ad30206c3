"""Host faults for the host-loss case: what it means for a whole host to go away, and how to undo it.

The case itself (test_host_loss.py) knows only "which node holds the VIP" and "the nodes on a
host"; how a host is lost is a `HostFault`:

- `PowerCut`: every VM of the host stops at once through the host's VM provider (libvirt:
  `virDomainDestroy`, no shutdown). Works on a real site. The nodes stay defined and off: the
  host "returns" when `kubitect apply --reconcile` starts them again.
- `UplinkCut`: the host's cable is pulled at the lab's switch (`kubitect lab uplink`): the host
  and every VM behind it drop off the network while still running. Only inside a lab that
  simulates the hosts (`kubitect lab up NAME --config ...`); `restore` plugs it back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


class FaultUnavailable(Exception):
    """This fault cannot be injected here; the message says why (the case is skipped with it)."""


@dataclass
class HostFault:
    """Takes a whole host away (`cut`) and, where it can, brings it back (`restore`)."""

    name: str = "host"
    restores_itself: bool = False  # True: `restore` brings the nodes back; False: apply --reconcile does

    def check(self, host: str) -> None:
        """Raises FaultUnavailable when the fault cannot be injected on `host`."""

    def cut(self, host: str, nodes: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, host: str, nodes: list[str]) -> None:
        """Undoes `cut` where the fault can (an uplink); a power cut is undone by apply --reconcile."""


class PowerCut(HostFault):
    """Every VM of the host destroyed at once through its provider's `power_off`."""

    def __init__(self, inventory: dict[str, Any]) -> None:
        super().__init__("power")
        self.inventory = inventory
        self._registry = None

    def _provider(self, host: str):
        from kubitect_core.plugins import load_registry

        if self._registry is None:
            self._registry = load_registry()
        providers = {n.get("host"): n.get("provider") or "libvirt" for n in self.inventory.get("nodes", [])}
        name = providers.get(host, "libvirt")
        provider = self._registry.providers.get(name)
        if provider is None or not hasattr(provider, "power_off"):
            raise FaultUnavailable(f"the VM provider '{name}' of host {host} cannot cut its power "
                                   "(it has no power_off)")
        record = ((self.inventory.get("facts") or {}).get("vms") or {}).get(name) or {}
        return provider, record

    def check(self, host: str) -> None:
        self._provider(host)

    def cut(self, host: str, nodes: list[str]) -> dict[str, Any]:
        provider, record = self._provider(host)
        stopped = provider.power_off(record, host, nodes)
        spread = max(stopped.values()) - min(stopped.values()) if stopped else 0.0
        return {"stopped": sorted(stopped), "spread_ms": round(spread * 1000, 1)}


class UplinkCut(HostFault):
    """The host's cable pulled at the lab's switch (lab only)."""

    def __init__(self, lab: str | None = None) -> None:
        super().__init__("uplink", restores_itself=True)
        from kubitect_core.lab import MARKER_ENV

        self.lab = lab or os.environ.get(MARKER_ENV)

    def check(self, host: str) -> None:
        from kubitect_core.lab.harness import lab_status_of

        if not self.lab:
            raise FaultUnavailable("an uplink cut needs a lab that simulates the hosts (kubitect lab up NAME "
                                   "--config FILE, then kubitect lab exec NAME -- kubitect verify ...)")
        hosts = lab_status_of(self.lab).info.get("hosts") or {}
        if host not in hosts:
            raise FaultUnavailable(f"lab {self.lab} does not simulate host {host} (it has: "
                                   f"{', '.join(hosts) or 'no hosts'})")

    def cut(self, host: str, nodes: list[str]) -> dict[str, Any]:
        from kubitect_core.lab.harness import set_uplink

        set_uplink(self.lab, host, up=False)
        return {"lab": self.lab, "cut_at": time.monotonic()}

    def restore(self, host: str, nodes: list[str]) -> None:
        from kubitect_core.lab.harness import set_uplink

        set_uplink(self.lab, host, up=True)


def fault_named(name: str, inventory: dict[str, Any]) -> HostFault:
    """The fault `verify --host-fault` names: power (default) or uplink."""
    if name in ("", "power"):
        return PowerCut(inventory)
    if name == "uplink":
        return UplinkCut()
    raise FaultUnavailable(f"unknown host fault {name!r} (power or uplink)")
