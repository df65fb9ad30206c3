"""The network layer of the libvirt provider: one cluster network per host (nat/route), or the bridge.

Record (the network stage's slice for this provider): `hosts[h] = {uri, ssh}`,
`networks[h] = {name, mode, bridge}`. The libvirt objects themselves are made in `network_layer`.
"""

from __future__ import annotations

from kubitect_core.sdk import Change, StageContext

from . import host_ssh, network_layer
from .adopted import adopted_networks, mac_for
from .connection import HostConnection
from .hosts import ConvergingLayer, nodes_on
from .spec import HostSpec, net_spec


class NetworkLayer(ConvergingLayer):
    """The `network` layer (`kubitect_core.sdk.MachineLayer`) on the hosts that select libvirt:
    each host's cluster network, with the DHCP reservations of the nodes."""

    async def _converge(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        net = net_spec(ctx.config)
        topo = ctx.topology

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            nodes = [(n, mac_for(ctx, topo, n)) for n in nodes_on(ctx, spec.name)]
            changes, rec = await hc.call(lambda c: network_layer.converge(
                c, cluster=ctx.cluster, host=spec.name, net=net, nodes=nodes, dry_run=dry_run, vip=topo.vip,
                adopted=spec.name in adopted_networks(ctx)))
            if not dry_run:
                ctx.record.setdefault("networks", {})[spec.name] = rec
            return changes

        return await self.hosts.each(ctx, hosts, one, record=not dry_run)

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Removes the cluster network of each host, found by tag and name even without a record.

        The network is a host's last layer to go, so the host's pinned SSH key goes with it.
        """
        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            h = spec.name
            rec = ctx.record.get("networks", {}).get(h) or {}
            recorded = [rec["name"]] if rec.get("name") else []
            out = await hc.call(lambda c: network_layer.destroy(c, cluster=ctx.cluster, host=h, recorded=recorded))
            ctx.record.get("networks", {}).pop(h, None)
            if spec.ssh is not None:
                host_ssh.forget(spec.ssh)
            ctx.record.get("hosts", {}).pop(h, None)
            return out

        return await self.hosts.each(ctx, hosts, one, record=False)
