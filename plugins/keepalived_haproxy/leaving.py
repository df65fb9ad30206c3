"""A load balancer leaving the cluster (scale-in) hands the VIP over before its machine is deleted.

Why: deleting the machine that holds the VIP is a failure as far as the other load balancers
know: they take over only after missing three adverts (the VRRP dead interval), and every
request in between is lost. Stopping keepalived first makes it send a priority-0 advert, the
protocol's "I am leaving", so a backup takes the VIP over at once (RFC 5798 §6.4.3), and this
waits until the VIP is really gone from the node. A backup that leaves just stops advertising.
The remaining load balancers drop it from their unicast peers when the loadbalancers stage
re-renders keepalived after the vms stage (a reload, no VIP move).
"""

from __future__ import annotations

import asyncio
import shlex
import time

from kubitect_core.sdk import Change, Node, NodePool, RemoteError, StageContext, StageError

HANDOVER_TIMEOUT_S = 15.0


def _ours(ctx: StageContext, name: str) -> bool:
    lb = getattr(getattr(getattr(ctx.config, "cluster", None), "nodes", None), "load_balancer", None)
    return getattr(lb, "implementation", None) == name


async def nodes_leaving(ctx: StageContext, nodes: list[Node], dry_run: bool, name: str, *,
                        masters_are_frontends: bool = False) -> list[Change]:
    """Stops keepalived (then HAProxy) on each leaving frontend, VIP holder included: the load
    balancers, or with `masters_are_frontends` (control-plane-vip) the masters, whose own HAProxy
    and the remaining masters' drain them first."""
    if ctx.config is None or not _ours(ctx, name):
        return []
    role = "master" if masters_are_frontends else "lb"
    frontends = ctx.topology.masters if masters_are_frontends else ctx.topology.load_balancers
    changes = await _drain_leaving_masters(ctx, nodes, dry_run, [f for f in frontends if f.ip])
    leaving = [n for n in nodes if n.role == role and n.ip]
    if not leaving:
        return changes
    vip = ctx.topology.vip
    if dry_run:
        peers = "master" if masters_are_frontends else "load balancer"
        return changes + [Change("change", "service", "keepalived", n.name,
                                 f"stopped before the machine goes: a VIP it holds moves to another {peers} "
                                 "first") for n in leaving]
    async with NodePool.from_access(ctx.ssh) as pool:
        for node in leaving:
            try:
                remote = await pool.get(node.ip, name=node.name, wait=10)
            except RemoteError as exc:  # already gone: the others took the VIP over by themselves
                ctx.progress(node.name, f"not reachable, nothing to hand over ({exc})")
                continue
            ctx.progress(node.name, "stopping keepalived (priority-0 advert: the VIP moves now)")
            await remote.run("systemctl stop keepalived", sudo=True, check=False, timeout=60)
            if vip:
                await _wait_released(remote, node, vip)
            await remote.run("systemctl stop haproxy", sudo=True, check=False, timeout=60)
            changes.append(Change("change", "service", "keepalived", node.name, "stopped; VIP handed over"))
    return changes


async def _wait_released(remote, node: Node, vip: str) -> None:
    deadline = time.monotonic() + HANDOVER_TIMEOUT_S
    while True:
        res = await remote.run("ip -4 -o addr show", check=False, timeout=30)
        if f" {vip}/" not in res.stdout:
            return
        if time.monotonic() > deadline:
            raise StageError(f"{node.name} still holds the VIP {vip} {HANDOVER_TIMEOUT_S:g}s after keepalived "
                             "stopped; not deleting it while it does")
        await asyncio.sleep(0.1)


BACKEND = "kubernetes-control-plane"  # haproxy.cfg.j2
ADMIN_SOCKET = "/run/haproxy/admin.sock"  # render.Layout.stats_socket
# HAProxy's runtime API through its admin socket, with the python3 every node image carries.
_RUNTIME = ("python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "s.sendall(sys.argv[2].encode()+b\"\\n\"); print(s.recv(4096).decode())' {socket} {command}")


async def _drain_leaving_masters(ctx: StageContext, nodes: list[Node], dry_run: bool,
                                 frontends: list[Node]) -> list[Change]:
    """A leaving control plane gets no new API connections from any load balancer before it is reset.

    Why: the installer stops its API server (kubeadm reset) before the loadbalancers stage drops
    it from haproxy.cfg; until HAProxy's health check notices, a request sent to it fails. Set to
    `drain` through the runtime API, it keeps its open connections and receives no new ones.
    """
    masters = [n for n in nodes if n.role == "master"]
    if not masters or not frontends:
        return []
    if dry_run:
        return [Change("change", "backend", m.name, None, "drained on every load balancer before it is reset")
                for m in masters]
    changes = []
    async with NodePool.from_access(ctx.ssh) as pool:
        for lb in frontends:
            try:
                remote = await pool.get(lb.ip, name=lb.name, wait=10)
            except RemoteError as exc:
                ctx.progress(lb.name, f"not reachable, its HAProxy health check will notice instead ({exc})")
                continue
            for m in masters:
                command = shlex.quote(f"set server {BACKEND}/{m.name} state drain")
                res = await remote.run(_RUNTIME.format(socket=ADMIN_SOCKET, command=command), sudo=True,
                                       check=False, timeout=30)
                ctx.progress(lb.name, f"HAProxy: {m.name} drained" if res.ok else
                             f"HAProxy: could not drain {m.name}: {res.stderr.strip()[:200]}")
        changes += [Change("change", "backend", m.name, None, "drained on every load balancer") for m in masters]
    return changes
