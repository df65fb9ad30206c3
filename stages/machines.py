"""network, storage, vms: the three layers a VM provider converges, per host, per provider."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace

from kubitect_core import user_known_hosts
from kubitect_core.contracts import Change, MachineLayer, StageContext, VmProvider
from kubitect_core.stage import MissingPlugin, Stage


def hosts_by_provider(ctx: StageContext, registry, stage: str) -> dict[object, list[str]]:
    """Groups the config's hosts by the provider each selects (`hosts[].provider`).

    Without a config (destroy of a cluster whose stored config cannot be read), the record says
    it: each provider's slice of the stage record, with the hosts it recorded.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    if ctx.config is None:
        for name, recorded in ctx.record.items():
            if isinstance(recorded, dict):
                hosts = recorded.get("hosts")
                groups[name] += [h for h in hosts if isinstance(h, str)] if isinstance(hosts, dict) else []
    else:
        for host in ctx.config.hosts:
            groups[host.provider].append(host.name)  # resolved: the default provider when omitted
    out = {}
    for name, hosts in groups.items():
        if name not in registry.providers:
            raise MissingPlugin(stage, "VM provider", name, list(registry.providers))
        out[registry.providers[name]] = hosts
    return out


class _ProviderLayer(Stage):
    """Asks each provider's layer object for this stage to converge its hosts; providers run concurrently.

    Each provider gets its own slice of the stage record (`record[<provider name>]`), so two
    providers in one cluster never overwrite each other's bookkeeping; the engine reads the node
    records of every slice back into the as-built topology (`kubitect_core.topology.recorded_nodes`).
    The providers see the config's topology (`config_topology`): they converge to it.
    """

    destroy_without_record = True
    config_topology = True

    def layer(self, provider: VmProvider) -> MachineLayer:
        """The provider's layer object this stage converges."""
        raise NotImplementedError

    async def _each(self, call: Callable[[MachineLayer, StageContext, list[str]], Awaitable[list[Change]]],
                    ctx: StageContext, registry) -> list[Change]:
        groups = hosts_by_provider(ctx, registry, self.name)
        calls = []
        for provider, hosts in groups.items():
            sub = replace(ctx, record=ctx.record.setdefault(provider.name, {}))
            calls.append(call(self.layer(provider), sub, hosts))
        results = await asyncio.gather(*calls)
        return [c for changes in results for c in (changes or [])]

    async def plan(self, ctx, registry):
        return await self._each(lambda layer, c, hosts: layer.plan(c, hosts), ctx, registry)

    async def apply(self, ctx, registry):
        return await self._each(lambda layer, c, hosts: layer.apply(c, hosts), ctx, registry)

    async def destroy(self, ctx, registry):
        return await self._each(lambda layer, c, hosts: layer.destroy(c, hosts), ctx, registry)


class NetworkStage(_ProviderLayer):
    name = "network"
    description = "cluster network per host (libvirt nat/route network, or the host bridge)"

    def layer(self, provider: VmProvider) -> MachineLayer:
        return provider.network


class StorageStage(_ProviderLayer):
    name = "storage"
    description = "resource pools, base images, node disks"
    requires = ("network",)

    def layer(self, provider: VmProvider) -> MachineLayer:
        return provider.storage


class VmsStage(_ProviderLayer):
    """Also keeps the nodes' pinned keys in the user's known_hosts (`ssh.addToKnownHosts`)."""

    name = "vms"
    description = "nodes created, booted and reachable over SSH"
    requires = ("network", "storage")

    def layer(self, provider: VmProvider) -> MachineLayer:
        return provider.vms

    async def plan(self, ctx, registry):
        return await super().plan(ctx, registry) + user_known_hosts.converge(ctx, dry_run=True)

    async def apply(self, ctx, registry):
        return await super().apply(ctx, registry) + user_known_hosts.converge(ctx)

    async def destroy(self, ctx, registry):
        return await super().destroy(ctx, registry) + user_known_hosts.converge(ctx, remove_all=True)
