"""The `nspawn` VM provider: nodes as systemd-nspawn containers on a local bridge.

A fast local lab (like kind, but for the whole HA topology: load balancers, masters, workers as
separate machines with real systemd and sshd), and the proof that providers are swappable.
The provider is three layer objects over the modules `network` (the bridge), `storage` (per-node
files and disks) and `nodes` (the containers), plus the preflight checks.
"""

from __future__ import annotations

import os
import shutil

from kubitect_core.sdk import Change, StageContext

from . import network, nodes, storage
from .host import NspawnError, root_netns_refusal
from .settings import cluster_net, my_nodes, remote_hosts, require_local


class NetworkLayer:
    """The cluster bridge (one per cluster, on the local host)."""

    async def plan(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        require_local(ctx, hosts)
        return await network.plan(ctx)

    async def apply(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        require_local(ctx, hosts)
        return await network.apply(ctx)

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        return await network.destroy(ctx)


class StorageLayer:
    """Per-node directories: host key, data disks, boot files."""

    async def plan(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        require_local(ctx, hosts)
        return await storage.plan(ctx, hosts)

    async def apply(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        require_local(ctx, hosts)
        return await storage.apply(ctx, hosts)

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        return await storage.destroy(ctx, hosts)


class NodesLayer:
    """The containers, booted and reachable over SSH."""

    async def plan(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        require_local(ctx, hosts)
        return await nodes.plan(ctx, hosts)

    async def apply(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        require_local(ctx, hosts)
        return await nodes.apply(ctx, hosts)

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        return await nodes.destroy(ctx, hosts)


class NspawnProvider:
    """VmProvider for hosts with `provider: nspawn` (local hosts only)."""

    name = "nspawn"

    def __init__(self) -> None:
        self.network = NetworkLayer()
        self.storage = StorageLayer()
        self.vms = NodesLayer()

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
