"""The keepalived-haproxy load balancer: plan / apply / destroy over SSH on every LB node."""

from __future__ import annotations

from kubitect_core.sdk import Change, Node, NodePool, Remote, RemoteError, StageContext, Topology

from . import node_ops
from .render import (
    ForwardPort,
    Layout,
    Rendered,
    endpoint,
    lb_mode,
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


class KeepalivedHaproxy:
    """contracts.LoadBalancer: HAProxy on every LB, keepalived VRRP for the VIP (kubitect.md 4)."""

    name = NAME
    default = True  # serves configs without cluster.nodes.loadBalancer.implementation (Kubitect's only LB)

    def __init__(self, layout: Layout = Layout()) -> None:
        self.layout = layout

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

    async def _render(self, ctx: StageContext, topo: Topology, remote: Remote, node: Node) -> Rendered:
        nic = await self._nic(ctx, remote, node) if lb_mode(topo) == "vrrp" else "unused"
        return render_node(topo, node, nic, forward_ports(ctx), vrrp_settings(ctx), self.layout)

    def _record_endpoint(self, ctx: StageContext, topo: Topology) -> None:
        ctx.record["endpoint"] = endpoint(topo)
        ctx.record["vip"] = topo.vip
        ctx.record["mode"] = lb_mode(topo)

    # ------------------------------------------------------------------ plan

    async def plan(self, ctx: StageContext) -> list[Change]:
        """What apply would do per LB node; reads the nodes' files, changes nothing."""
        topo = ctx.topology
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
            rendered = await self._render(ctx, topo, remote, node)
            state = await node_ops.inspect(remote, rendered, services)
            return node_ops.planned_changes(node.name, state, rendered, services)

        async with NodePool.from_access(ctx.ssh) as pool:
            per_node = await pool.each(topo.load_balancers, one)
        return [c for changes in per_node for c in changes]

    # ------------------------------------------------------------------ apply

    async def apply(self, ctx: StageContext) -> list[Change]:
        """Converge every LB node; records the endpoint, the VIP and per-node config hashes."""
        topo = ctx.topology
        self._record_endpoint(ctx, topo)
        if lb_mode(topo) == "none":
            ctx.record["nodes"] = {}
            return [Change("keep", "endpoint", endpoint(topo), detail="no load balancers: first master")]
        services = self._services(topo)
        ctx.record.setdefault("nodes", {})

        async def one(node: Node) -> list[Change]:
            ctx.progress(node.name, "connecting")
            remote = await pool.get(node.ip, name=node.name, wait=float(ctx.options.get("ssh_wait", 120)))
            return await self._converge(ctx, topo, remote, node, services)

        async with NodePool.from_access(ctx.ssh) as pool:
            per_node = await pool.each(topo.load_balancers, one)
        return [c for changes in per_node for c in changes]

    async def _converge(self, ctx: StageContext, topo: Topology, remote: Remote, node: Node,
                        services: list[str]) -> list[Change]:
        rendered = await self._render(ctx, topo, remote, node)
        state = await node_ops.inspect(remote, rendered, services)
        missing = [s for s in services if not state.packages.get(s)]
        changes: list[Change] = []
        if missing:
            ctx.progress(node.name, f"installing {', '.join(missing)}")
            await node_ops.install(remote, state.pkg_manager, missing)
            changes += [Change("create", "package", p, node.name) for p in missing]
            state = await node_ops.inspect(remote, rendered, services)
        planned = node_ops.planned_changes(node.name, state, rendered, services)
        if any(c.kind == "sysctl" and c.action != "keep" for c in planned):
            await node_ops.ensure_sysctl(remote)
        changed_paths = {c.name for c in planned if c.kind == "file" and c.action != "keep"}
        # The check script first: keepalived -t resolves the script it tracks.
        for path in sorted(changed_paths, key=lambda p: p != self.layout.check_script):
            ctx.progress(node.name, f"writing {path}")
            await node_ops.install_file(remote, path, rendered.files[path], self.layout)
        done_services = []
        for svc in services:  # HAProxy before keepalived, so the VIP lands on a working HAProxy
            svc_files = [p for p in rendered.files if (svc == "haproxy") == (p == self.layout.haproxy_cfg)]
            action = await node_ops.converge_service(
                remote, svc, running=state.active.get(svc, False), enabled=state.enabled.get(svc, False),
                changed=any(p in changed_paths for p in svc_files))
            done_services.append(Change(action, "service", svc, node.name))
        for svc in set(node_ops.SERVICES) - set(services):
            if state.active.get(svc) or state.enabled.get(svc):
                await node_ops.remove(remote, [svc], [self.layout.keepalived_conf, self.layout.check_script])
                done_services.append(Change("delete", "service", svc, node.name, "no VIP configured"))
        changes += [c for c in planned if c.kind in ("sysctl", "file")] + done_services
        ctx.record.setdefault("nodes", {})[node.name] = {"ip": node.ip, "hashes": rendered.hashes(),
                                                         "services": services}
        return changes

    # ------------------------------------------------------------------ destroy

    async def destroy(self, ctx: StageContext) -> list[Change]:
        """Stop and disable HAProxy and keepalived and delete kubitect's files on every reachable LB.

        When the whole cluster is being destroyed (`machines_deleted`), the load balancer machines
        are deleted right after this stage: nothing is run on them, the record is just dropped.
        """
        if ctx.options.get("machines_deleted"):
            ctx.record.clear()
            return []
        topo = ctx.topology
        paths = [self.layout.haproxy_cfg, self.layout.keepalived_conf, self.layout.check_script,
                 node_ops.SYSCTL_FILE]

        async def one(node: Node) -> list[Change]:
            if not node.ip:
                return []
            try:
                remote = await pool.get(node.ip, name=node.name)
            except RemoteError as exc:
                ctx.progress(node.name, f"not reachable, nothing to remove ({exc})")
                return []
            gone = await node_ops.remove(remote, list(node_ops.SERVICES), paths)
            return [Change("delete", "service" if "/" not in g else "file", g, node.name) for g in gone]

        async with NodePool.from_access(ctx.ssh) as pool:
            per_node = await pool.each(topo.load_balancers, one, return_exceptions=True)
        ctx.record.clear()
        return [c for changes in per_node if isinstance(changes, list) for c in changes]
