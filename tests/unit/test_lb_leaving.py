"""keepalived-haproxy's part of a scale-in (hook `kubitect_nodes_leaving`): a leaving load balancer
hands the VIP over before its machine goes. Here: what it plans, and that it leaves alone what is
not its own; the handover itself runs in tests/lab/test_scale.py (real keepalived)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kubitect_plugins.keepalived_haproxy import kubitect_nodes_leaving

from kubitect_core.sdk import Node, Topology


def _node(role: str, nid: str, ip: str) -> Node:
    return Node(role=role, id=nid, name=f"c-{role}-{nid}", host="h", ip=ip, mac=None, cpu=1, ram_gib=1,
                main_disk_gib=10)


def _ctx(implementation: str = "keepalived-haproxy"):
    config = SimpleNamespace(cluster=SimpleNamespace(nodes=SimpleNamespace(
        load_balancer=SimpleNamespace(implementation=implementation))))
    topo = Topology("c", (), "10.0.0.100", "10.0.0.100", 51)
    return SimpleNamespace(config=config, topology=topo, ssh=None, progress=lambda *a: None)


LEAVING = [_node("lb", "3", "10.0.0.13"), _node("worker", "2", "10.0.0.32")]


def test_plan_says_keepalived_stops_first_on_each_leaving_load_balancer():
    changes = asyncio.run(kubitect_nodes_leaving(_ctx(), LEAVING, True))
    assert [(c.action, c.kind, c.name, c.host) for c in changes] == [("change", "service", "keepalived", "c-lb-3")]
    assert "VIP it holds moves to another load balancer first" in changes[0].detail


def test_another_implementation_or_no_leaving_load_balancer_is_left_alone():
    assert asyncio.run(kubitect_nodes_leaving(_ctx("kube-vip"), LEAVING, True)) == []
    assert asyncio.run(kubitect_nodes_leaving(_ctx(), LEAVING[1:], False)) == []  # no SSH without an LB


def test_control_plane_vip_hands_the_vip_over_from_a_leaving_master():
    """Under control-plane-vip the masters are the frontends: a leaving master is drained in every
    remaining master's HAProxy, then stops keepalived so a VIP it holds moves first."""
    staying = _node("master", "1", "10.0.0.21")
    leaving = _node("master", "3", "10.0.0.23")
    ctx = _ctx("control-plane-vip")
    ctx.topology = Topology("c", (staying,), "10.0.0.100", "10.0.0.100", 51)
    changes = asyncio.run(kubitect_nodes_leaving(ctx, [leaving, _node("worker", "2", "10.0.0.32")], True))
    assert [(c.action, c.kind, c.name, c.host) for c in changes] == [
        ("change", "backend", "c-master-3", None), ("change", "service", "keepalived", "c-master-3")]
    assert "moves to another master first" in changes[1].detail
    # keepalived-haproxy proper does not touch a leaving master's keepalived (it runs none)
    plain = asyncio.run(kubitect_nodes_leaving(_ctx(), [leaving], True))
    assert [c.kind for c in plain] == []
