"""The libvirt VM provider: network, storage and vms layers on local and remote libvirt hosts.

The provider is three layer objects (`network`, `storage`, `vms`, one module each) sharing one
`Hosts` (one connection per host for the run), plus the preflight checks. Plan and apply share
one code path per layer (`dry_run`), so a plan lists exactly what apply would do. What each
layer records is described in its module.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubitect_core.sdk import Change, StageContext, lazy_import

from . import adopted, host_ssh
from .connection import HostConnection, lookup
from .host_ssh import HostSsh
from .hosts import Hosts, LibvirtError, nodes_on
from .network import NetworkLayer
from .spec import HostSpec, image_spec, net_spec
from .storage import StorageLayer
from .vms import VmsLayer

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

__all__ = ["LibvirtError", "LibvirtProvider"]


class LibvirtProvider:
    """The built-in `libvirt` VM provider (see `kubitect_core.sdk.VmProvider`)."""

    name = "libvirt"
    default = True  # serves hosts without `provider`, as every host in Kubitect

    def __init__(self) -> None:
        self.hosts = Hosts()
        self.network = NetworkLayer(self.hosts)
        self.storage = StorageLayer(self.hosts)
        self.vms = VmsLayer(self.hosts)

    def connection(self, host: str, uri: str | None = None) -> HostConnection:
        """The run's connection to `host` (tests inspect libvirt state through it)."""
        return self.hosts.connection(host, uri)

    def close(self) -> None:
        """Closes every connection (the end of a process run)."""
        self.hosts.close()

    def power_off(self, record: dict[str, Any], host: str, names: list[str]) -> dict[str, float]:
        """Stops the named nodes on `host` at once, as a power cut would: `virDomainDestroy`, no
        shutdown. `record` is this provider's vms record (it names each host's URI). Used by the
        host-loss conformance case (`kubitect verify --chaos host`); the domains stay defined, so
        `kubitect apply --reconcile` starts them again. Returns {node: monotonic time it stopped}.
        """
        recorded = record.get("hosts", {}).get(host) or {}
        ssh = HostSsh.from_record(recorded.get("ssh"))
        if ssh is not None:  # through the wrapper that checks the host's pinned key (refreshed if lost)
            host_ssh.write_wrapper(ssh)
        uri = ssh.uri() if ssh is not None else recorded.get("uri")
        if not uri:
            raise LibvirtError(f"host '{host}' has no recorded libvirt URI; was the vms stage applied?")
        conn = libvirt.open(uri)
        try:
            doms = [conn.lookupByName(n) for n in names]  # look up first, so the cut itself is quick
            stopped = {}
            for name, dom in zip(names, doms, strict=True):
                if dom.isActive():
                    dom.destroy()
                stopped[name] = time.monotonic()
            return stopped
        finally:
            conn.close()

    async def adopt_kubitect(self, layers: Mapping[str, StageContext], hosts: list[str], tfstate: dict[str, Any],
                             dry_run: bool) -> list[Change]:
        """Takes over what Kubitect (Go) made on these hosts, keeping its names (see `adopted`)."""
        return await adopted.adopt(self.hosts, self.vms.template, layers, hosts, tfstate, dry_run)

    async def preflight(self, ctx: StageContext, hosts: list[str]) -> list[str]:
        """Checks every host answers, the bridge exists (bridge mode) and the image is there."""
        problems: list[str] = []
        net = net_spec(ctx.config)
        image = image_spec(ctx.config)
        if "://" not in image.source and not Path(image.source).is_file():
            problems.append(f"cluster.nodeTemplate.os.source: image file {image.source} does not exist")
        if net.mode == "bridge":
            problems += [f"node {n.name}: no ip, and in bridge mode the address a DHCP server outside "
                         "kubitect hands out cannot be learned; give it an ip (or use network mode nat)"
                         for h in hosts for n in nodes_on(ctx, h) if not n.ip]

        async def check(spec: HostSpec, hc: HostConnection) -> list[Change]:
            try:
                await hc.call(lambda c: c.getVersion())
            except (ConnectionError, libvirt.libvirtError) as exc:
                problems.append(str(exc))
                return []
            if net.mode == "bridge" and net.bridge:
                if not await hc.call(lambda c: _bridge_exists(c, net.bridge, spec.remote)):
                    problems.append(f"host {spec.name}: bridge '{net.bridge}' (cluster.network.bridge) does "
                                    "not exist there; create it first or use network mode nat/route")
            return []

        await self.hosts.each(ctx, hosts, check, record=False)
        return problems


def _bridge_exists(conn: libvirt.virConnect, bridge: str, remote: bool) -> bool:
    """Whether the host has the bridge: libvirt's interface list, else (local host) sysfs."""
    try:
        if lookup(conn.interfaceLookupByName, bridge) is not None:
            return True
    except libvirt.libvirtError:
        pass
    if conn.getType().lower() != "test" and not remote and conn.getURI().startswith("qemu:///"):
        return Path(f"/sys/class/net/{bridge}/bridge").is_dir()
    return False
