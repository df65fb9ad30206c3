"""The keepalived-haproxy load balancer: plan / apply / destroy over SSH on every LB node."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from kubitect_core.sdk import Change, Node, NodePool, Remote, RemoteError, StageContext, Topology

from . import budgets, node_ops
from .guard import NodeProbe, node_notes, node_warnings
from .render import (
    ForwardPort,
    Layout,
    NodeFeatures,
    Rendered,
    endpoint,
    lb_mode,
    priorities,
    render_node,
)
from .settings import EXTENSION_ID, VrrpSettings, settings_from

NAME = "keepalived-haproxy"
NIC_QUERY = "ip -o -4 addr show | awk -v ip={ip} '{{split($4, a, \"/\"); if (a[1] == ip) {{print $2; exit}}}}'"


def vrrp_settings(ctx: StageContext) -> VrrpSettings:
    """The `cluster.nodes.loadBalancer.vrrp` extension, or its defaults for an original config."""
    return settings_from(ctx.extensions.get(EXTENSION_ID) if isinstance(ctx.extensions, dict) else None)


def forward_ports(ctx: StageContext) -> list[ForwardPort]:
    """`cluster.nodes.loadBalancer.forwardPorts` as render inputs (targetPort defaults to port)."""
    lb = getattr(getattr(getattr(ctx.config, "cluster", None), "nodes", None), "load_balancer", None)
    out = []
    for fp in getattr(lb, "forward_ports", None) or []:
        out.append(ForwardPort(name=fp.name, port=int(fp.port),
                               target_port=int(fp.target_port) if fp.target_port else int(fp.port),
                               target=fp.target or "workers"))
    return out


def configured_nic(ctx: StageContext) -> str | None:
    """`cluster.nodeTemplate.os.networkInterface` when set; else it is read from each node."""
    try:
        return ctx.config.cluster.node_template.os.network_interface or None
    except AttributeError:
        return None


@dataclass
class _Prepared:
    """One node after its files are in place, before its services are touched."""

    node: Node
    remote: Remote
    rendered: Rendered
    state: node_ops.NodeState
    planned: list[Change]
    changes: list[Change] = field(default_factory=list)


class KeepalivedHaproxy:
    """contracts.LoadBalancer: HAProxy on every LB, keepalived VRRP for the VIP (kubitect.md 4).

    apply works in two phases: every node's packages and files concurrently, then the services
    one node at a time (`_service_order`), so a reload or restart never touches two load balancers
    at once, the holder hands over (if it must restart) to an already updated peer, and a new
    load balancer joins only once the others advertise to it.
    """

    name = NAME
    default = True  # serves configs without cluster.nodes.loadBalancer.implementation (Kubitect's only LB)
    runs_on = "load_balancers"

    def __init__(self, layout: Layout = Layout()) -> None:
        self.layout = layout

    @property
    def api_port(self) -> int:
        """The port HAProxy serves the API on (recorded as the endpoint's port)."""
        return self.layout.api_port

    def frontends(self, topo: Topology) -> Topology:
        """The topology as rendering sees it: its `load_balancers` are the nodes that run HAProxy
        (and keepalived). Here the load balancer instances; the control-plane variant's masters."""
        return topo

    # ------------------------------------------------------------------ helpers

    def _services(self, topo: Topology) -> list[str]:
        return ["haproxy", "keepalived"] if lb_mode(topo) == "vrrp" else ["haproxy"]

    async def _nic(self, ctx: StageContext, remote: Remote, node: Node) -> str:
        nic = configured_nic(ctx)
        if nic:
            return nic
        res = await remote.run(NIC_QUERY.format(ip=node.ip), check=False)
        if not res.stdout.strip():
            raise RemoteError(f"{remote.label}: no interface carries {node.ip}; set "
                              "cluster.nodeTemplate.os.networkInterface")
        return res.stdout.split()[0]

    async def _probe(self, topo: Topology, remote: Remote) -> NodeProbe:
        """What the node supports; nothing to ask without keepalived."""
        if lb_mode(topo) != "vrrp":
            return NodeProbe(NodeFeatures())
        return await node_ops.probe(remote)

    async def _render(self, ctx: StageContext, topo: Topology, remote: Remote, node: Node,
                      probe: NodeProbe) -> Rendered:
        nic = await self._nic(ctx, remote, node) if lb_mode(topo) == "vrrp" else "unused"
        return render_node(topo, node, nic, forward_ports(ctx), vrrp_settings(ctx), self.layout, probe.features)

    def _extra_paths(self, rendered: Rendered) -> tuple[str, ...]:
        """Managed files that may be on the node although this render does not want them."""
        return tuple(p for p in self.layout.dropins if p not in rendered.files)

    def _record_endpoint(self, ctx: StageContext, topo: Topology) -> None:
        ctx.record["implementation"] = self.name
        ctx.record["endpoint"] = endpoint(topo)
        # Without load balancers the endpoint is the first master's own API server.
        ctx.record["port"] = self.layout.api_port if topo.load_balancers else self.layout.backend_port
        ctx.record["vip"] = topo.vip
        ctx.record["mode"] = lb_mode(topo)
        ctx.record.pop("whoami_port", None)
        ctx.record.pop("failover", None)
        if lb_mode(topo) == "vrrp":
            ctx.record["whoami_port"] = self.layout.whoami_port
            settings = vrrp_settings(ctx)
            ranked = priorities(topo, settings)
            ctx.record["vrrp"] = {"profile": settings.profile, "advert_int": settings.advert_int,
                                  "priorities": ranked}
            # The budgets the conformance suite holds each fault's gap to (budgets.py).
            ctx.record["failover"] = budgets.declared(settings, ranked, holder_is_backend=self.runs_on == "masters")

    def _report_probe(self, ctx: StageContext, node: Node, probe: NodeProbe) -> None:
        """Says (and records) what this node lacks for the settings, and how HAProxy is tracked."""
        settings = vrrp_settings(ctx)
        warnings = node_warnings(settings, probe)
        for message in warnings:
            ctx.progress(node.name, f"warning: {message}")
        for message in node_notes(settings, probe):
            ctx.progress(node.name, message)
        rec = ctx.record.setdefault("nodes", {}).setdefault(node.name, {})
        rec["warnings"] = warnings
        rec["features"] = {"process_events": probe.features.process_events, "realtime": probe.features.realtime,
                           "memlock": probe.features.memlock, "virt": probe.virt}
        rec["haproxy_exit_tracking"] = settings.track_haproxy_exit

    # ------------------------------------------------------------------ plan

    async def plan(self, ctx: StageContext) -> list[Change]:
        """What apply would do per LB node; reads the nodes' files, changes nothing."""
        topo = self.frontends(ctx.topology)
        if lb_mode(topo) == "none":
            first = topo.masters[0] if topo.masters else None
            where = topo.endpoint or (f"{first.name} ({first.address})" if first else "none")
            return [Change("keep", "endpoint", where, detail="no load balancers: first master")]
        services = self._services(topo)

        async def one(node: Node) -> list[Change]:
            if not node.ip:
                return [Change("create", "loadbalancer", node.name, node.name,
                               f"node not created yet; {node.address}")]
            try:
                remote = await pool.get(node.ip, name=node.name)
            except RemoteError:
                return [Change("create", "loadbalancer", node.name, node.name, "node not reachable yet")]
            rendered = await self._render(ctx, topo, remote, node, await self._probe(topo, remote))
            state = await node_ops.inspect(remote, rendered, services, self._extra_paths(rendered))
            return node_ops.planned_changes(node.name, state, rendered, services, self.layout)

        async with NodePool.from_access(ctx.ssh) as pool:
            per_node = await pool.each(topo.load_balancers, one)
        return [c for changes in per_node for c in changes]

    # ------------------------------------------------------------------ apply

    async def apply(self, ctx: StageContext) -> list[Change]:
        """Converge every LB node; records the endpoint, the VIP and per-node config hashes."""
        topo = self.frontends(ctx.topology)
        self._record_endpoint(ctx, topo)
        if lb_mode(topo) == "none":
            ctx.record["nodes"] = {}
            return [Change("keep", "endpoint", endpoint(topo), detail="no load balancers: first master")]
        services = self._services(topo)
        ctx.record.setdefault("nodes", {})

        async def one(node: Node) -> _Prepared:
            ctx.progress(node.name, "connecting")
            remote = await pool.get(node.ip, name=node.name, wait=float(ctx.options.get("ssh_wait", 120)))
            return await self._prepare(ctx, topo, remote, node, services)

        async with NodePool.from_access(ctx.ssh) as pool:
            prepared = await pool.each(topo.load_balancers, one)
            for item in sorted(prepared, key=lambda p: self._service_order(p, topo)):
                item.changes += await self._converge_services(ctx, item, services)
        return [c for item in prepared for c in item.changes]

    @staticmethod
    def _service_order(item: _Prepared, topo: Topology) -> tuple[bool, bool]:
        """Services one node at a time: running backups, then the VIP holder, then new nodes.

        A new load balancer (keepalived not running yet) starts last, once its peers send their
        unicast adverts to it too: started earlier it would hear no holder, take the VIP after
        3 adverts and win the election against the holder on a tie (a scale moving the VIP).
        """
        return (not item.state.active.get("keepalived", False), item.state.holds(topo.vip))

    async def _prepare(self, ctx: StageContext, topo: Topology, remote: Remote, node: Node,
                       services: list[str]) -> _Prepared:
        """Packages, sysctl and files of one node (validated before they go live)."""
        probe = await self._probe(topo, remote)
        rendered = await self._render(ctx, topo, remote, node, probe)
        if lb_mode(topo) == "vrrp":
            self._report_probe(ctx, node, probe)
        extra = self._extra_paths(rendered)
        state = await node_ops.inspect(remote, rendered, services, extra)
        missing = [s for s in services if not state.packages.get(s)]
        changes: list[Change] = []
        if missing:
            ctx.progress(node.name, f"installing {', '.join(missing)}")
            await node_ops.install(remote, state.pkg_manager, missing)
            changes += [Change("create", "package", p, node.name) for p in missing]
            state = await node_ops.inspect(remote, rendered, services, extra)
        planned = node_ops.planned_changes(node.name, state, rendered, services, self.layout)
        if any(c.kind == "sysctl" and c.action != "keep" for c in planned):
            await node_ops.ensure_sysctl(remote)
        files = [c for c in planned if c.kind == "file" and c.action != "keep"]
        # The check script first: keepalived -t resolves the script it tracks.
        for change in sorted(files, key=lambda c: c.name != self.layout.check_script):
            ctx.progress(node.name, f"{'removing' if change.action == 'delete' else 'writing'} {change.name}")
            if change.action == "delete":
                await remote.run(f"rm -f {shlex.quote(change.name)}", sudo=True)
            else:
                await node_ops.install_file(remote, change.name, rendered.files[change.name], self.layout)
        if any(c.name in self.layout.dropins for c in files):
            await node_ops.daemon_reload(remote)
        changes += [c for c in planned if c.kind in ("sysctl", "file")]
        return _Prepared(node, remote, rendered, state, planned, changes)

    async def _converge_services(self, ctx: StageContext, item: _Prepared, services: list[str]) -> list[Change]:
        """HAProxy before keepalived, so the VIP lands on a working HAProxy; records the node."""
        node, remote, state, planned = item.node, item.remote, item.state, item.planned
        done: list[Change] = []
        for svc in services:
            plan = next(c for c in planned if c.kind == "service" and c.name == svc)
            if plan.action != "keep":
                ctx.progress(node.name, f"{plan.detail or plan.action} {svc}")
            action = await node_ops.converge_service(
                remote, svc, running=state.active.get(svc, False), enabled=state.enabled.get(svc, False),
                changed=plan.action == "change" and plan.detail in ("reload", "restart"),
                restart=plan.detail == "restart")
            done.append(Change(action, "service", svc, node.name, plan.detail if action != "keep" else ""))
            if svc == "haproxy" and self.layout.haproxy_dropin in item.rendered.files:
                await node_ops.sync_exit_file(remote, self.layout)
        for svc in set(node_ops.SERVICES) - set(services):
            if state.active.get(svc) or state.enabled.get(svc):
                await node_ops.remove(remote, [svc], [self.layout.keepalived_conf, self.layout.check_script,
                                                      *self.layout.dropins])
                done.append(Change("delete", "service", svc, node.name, "no VIP configured"))
        ctx.record.setdefault("nodes", {}).setdefault(node.name, {}).update(
            {"ip": node.ip, "hashes": item.rendered.hashes(), "services": services})
        return done

    # ------------------------------------------------------------------ destroy

    async def destroy(self, ctx: StageContext) -> list[Change]:
        """Stop and disable HAProxy and keepalived and delete kubitect's files on every reachable LB.

        When the whole cluster is being destroyed (`machines_deleted`), the load balancer machines
        are deleted right after this stage: nothing is run on them, the record is just dropped.
        """
        if ctx.options.get("machines_deleted"):
            ctx.record.clear()
            return []
        topo = self.frontends(ctx.topology)
        paths = [self.layout.haproxy_cfg, self.layout.keepalived_conf, self.layout.check_script,
                 *self.layout.dropins, node_ops.SYSCTL_FILE]

        async def one(node: Node) -> list[Change]:
            if not node.ip:
                return []
            try:
                remote = await pool.get(node.ip, name=node.name)
            except RemoteError as exc:
                ctx.progress(node.name, f"not reachable, nothing to remove ({exc})")
                return []
            gone = await node_ops.remove(remote, list(node_ops.SERVICES), paths)
            if set(self.layout.dropins) & set(gone):
                await node_ops.daemon_reload(remote)
            return [Change("delete", "service" if "/" not in g else "file", g, node.name) for g in gone]

        async with NodePool.from_access(ctx.ssh) as pool:
            per_node = await pool.each(topo.load_balancers, one, return_exceptions=True)
        ctx.record.clear()
        return [c for changes in per_node if isinstance(changes, list) for c in changes]
