"""The `nspawn` VM provider: nodes as systemd-nspawn containers on a local bridge.

A fast local lab (like kind, but for the whole HA topology: load balancers, masters, workers as
separate machines with real systemd and sshd), and the proof that providers are swappable.
"""

from __future__ import annotations

import os
import shutil

from kubitect_core.sdk import Change, StageContext

from . import network, nodes, storage
from .host import NspawnError, root_netns_refusal
from .settings import cluster_net, my_nodes, remote_hosts, require_local

LAYERS = ("network", "storage", "vms")


class NspawnProvider:
    """VmProvider for hosts with `provider: nspawn` (local hosts only)."""

    name = "nspawn"

    def _module(self, layer: str):
        if layer not in LAYERS:
            raise NspawnError(f"unknown layer '{layer}' (the nspawn provider serves {', '.join(LAYERS)})")
        return {"network": network, "storage": storage, "vms": nodes}[layer]

    async def plan(self, layer: str, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Dry run of one layer: what apply would create, change or delete."""
        require_local(ctx, hosts)
        mod = self._module(layer)
        return await (mod.plan(ctx) if layer == "network" else mod.plan(ctx, hosts))

    async def apply(self, layer: str, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Converges one layer; a second call with the same config returns only "keep"."""
        require_local(ctx, hosts)
        mod = self._module(layer)
        return await (mod.apply(ctx) if layer == "network" else mod.apply(ctx, hosts))

    async def destroy(self, layer: str, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Removes what this layer made for the cluster, also when the record was lost."""
        mod = self._module(layer)
        return await (mod.destroy(ctx) if layer == "network" else mod.destroy(ctx, hosts))

    async def preflight(self, ctx: StageContext, hosts: list[str]) -> list[str]:
        """Machine checks before anything is created; each problem says how to fix it."""
        problems: list[str] = []
        if os.geteuid() != 0:
            problems.append("the nspawn provider needs root (systemd-nspawn, bridges); run kubitect as root")
        for tool in ("systemd-nspawn", "ip", "nsenter"):
            if shutil.which(tool) is None:
                problems.append(f"'{tool}' is not installed (apt-get install systemd-container iproute2 "
                                "util-linux)")
        refusal = root_netns_refusal()
        if refusal:
            problems.append(refusal)
        remote = remote_hosts(ctx, hosts)
        if remote:
            problems.append(f"hosts {', '.join(remote)}: the nspawn provider supports local hosts only")
        try:
            net = cluster_net(ctx)
            for node in my_nodes(ctx, hosts):
                if not node.ip:
                    problems.append(f"node {node.name}: the nspawn provider needs a static IP")
                elif node.ip == str(net.gateway):
                    problems.append(f"node {node.name}: IP {node.ip} is the gateway's address")
        except NspawnError as exc:
            problems.append(str(exc))
        return problems
