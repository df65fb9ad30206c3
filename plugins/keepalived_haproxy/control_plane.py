"""The `control-plane-vip` load balancer: keepalived + HAProxy on the masters, no load balancer VMs.

The layout of kubeadm's "Options for software load balancing" (keepalived and HAProxy as
services on the control-plane nodes): every master runs HAProxy on its own port, 8443 (the API
server already binds 6443 on the same node), in front of its own and its peers' API servers,
and keepalived moves the VIP between the masters. A small cluster saves the two load balancer
VMs and keeps what kcli's VIP-only setup lacks: load balancing, and a VIP that leaves a master
whose HAProxy is gone.

Everything else is the keepalived-haproxy implementation, unchanged: the same templates, VRRP
profiles (`cluster.nodes.loadBalancer.vrrp`), node work and guard rails. It only sees a
topology whose load balancers are the masters (`MastersAsFrontends`) and a layout whose API
frontend listens on 8443. Why one plugin package holds both: they share every template and
every line of node work, and the SDK rule "no plugin imports another plugin" would otherwise
force that code into the SDK, where it is not neutral (it is HAProxy's and keepalived's).

What differs for the user: the endpoint is `<vip>:8443` (recorded as the endpoint's `port`,
which the installers and the kubeconfig use); the VIP is required; load balancer instances are
refused (validation, `runs_on = "masters"`); a master lost is also a backend lost, so the
failover budgets for a lost holder add HAProxy's backend health check (see `budgets.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from kubitect_core.sdk import Node, Topology

from .plugin import KeepalivedHaproxy
from .render import Layout

NAME = "control-plane-vip"
# kubeadm's HA guide runs HAProxy beside the API server on the masters on this port.
FRONTEND_PORT = 8443


@dataclass(frozen=True)
class MastersAsFrontends(Topology):
    """The cluster's topology with the masters in the load balancers' place (a read-only view)."""

    @property
    def load_balancers(self) -> tuple[Node, ...]:
        return self.masters


def masters_as_frontends(topo: Topology) -> MastersAsFrontends:
    """The view the rendering and node code of keepalived-haproxy run on for this implementation."""
    if isinstance(topo, MastersAsFrontends):
        return topo
    return MastersAsFrontends(**{f.name: getattr(topo, f.name) for f in fields(topo)})


class ControlPlaneVip(KeepalivedHaproxy):
    """contracts.LoadBalancer: the VIP and HAProxy (port 8443) on every master."""

    name = NAME
    default = False
    runs_on = "masters"
    vip_use = "required"

    def __init__(self, layout: Layout | None = None) -> None:
        super().__init__(layout or Layout(api_port=FRONTEND_PORT))

    def frontends(self, topo: Topology) -> Topology:
        return masters_as_frontends(topo)
