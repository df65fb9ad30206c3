"""DHCP nodes (nat mode without IPs) against libvirt's test driver: plan, lease recording, the
reservation that keeps a lease, a lease that moved, scale-down.

Networks, domains and DHCP host reservations go through the real libvirt API (test driver).
The test driver runs no guest and has no DHCP server, so two things are TEST DOUBLES here: the
lease lookup (`ipv4_leases`: what dnsmasq would answer for a MAC) and the SSH/cloud-init wait.
The real ones run in tests/e2e/test_dhcp_nodes.py.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest
import yaml
from kubitect_plugins.libvirt import readiness
from kubitect_plugins.libvirt import vms as vms_mod
from kubitect_plugins.libvirt.provider import LibvirtError
from kubitect_plugins.libvirt.spec import stable_mac
from libvirt_helpers import make_image

from kubitect_core.config import load_config
from kubitect_core.contracts import StageContext

pytestmark = pytest.mark.libvirt

CLUSTER = "dh"
NET = f"{CLUSTER}-network"
LB, MASTER, WORKER = f"{CLUSTER}-lb-1", f"{CLUSTER}-master-1", f"{CLUSTER}-worker-1"


def _config(tmp: Path, image: Path, *, workers: int = 1, mode: str = "nat", lb: bool = True) -> Path:
    """The `minimal` preset's shape (one local host, nat, no IPs) with a load balancer and workers."""
    nodes = {"master": {"instances": [{"id": 1}]},
             "worker": {"instances": [{"id": i + 1} for i in range(workers)]}}
    if lb:
        nodes["loadBalancer"] = {"instances": [{"id": 1}]}
    network = {"mode": mode, "cidr": "192.168.113.0/24"} | ({"bridge": "br0"} if mode == "bridge" else {})
    cfg = {"hosts": [{"name": "localhost", "connection": {"type": "local"}}],
           "cluster": {"name": CLUSTER, "network": network,
                       "nodeTemplate": {"updateOnBoot": False, "os": {"source": str(image)}}, "nodes": nodes}}
    path = tmp / f"dh-{workers}-{mode}-{lb}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Dnsmasq:
    """TEST DOUBLE of the network's DHCP server: a lease per MAC, handed out on first ask, as
    dnsmasq does; `move` makes a lease change (what a lost reservation plus a reboot would do)."""

    def __init__(self):
        self.leases: dict[str, str] = {}
        self.asked: list[str] = []
        self.next = 50

    def __call__(self, conn, network: str, mac: str) -> list[str]:
        assert network == NET
        self.asked.append(mac)
        if mac not in self.leases:
            self.leases[mac] = f"192.168.113.{self.next}"
            self.next += 1
        return [self.leases[mac]]

    def move(self, mac: str, ip: str) -> None:
        self.leases[mac] = ip


@pytest.fixture
def dhcp(monkeypatch, make_cluster, tmp_path):
    """A cluster of DHCP nodes whose provider waits for leases (from the Dnsmasq double) and for
    SSH (a double that only records the address it was asked to wait at)."""
    server = Dnsmasq()
    waited: list[str] = []

    async def ready(ctx, ip, timeout):
        waited.append(ip)

    monkeypatch.setattr(readiness, "ipv4_leases", server)
    monkeypatch.setattr(vms_mod, "ipv4_leases", server)
    monkeypatch.setattr(vms_mod, "wait_ready", ready)
    monkeypatch.setattr(readiness, "POLL", 0.01)
    image = make_image(tmp_path / "img", kernel=True)
    cluster = make_cluster(_config(tmp_path, image))
    cluster.image = image
    base_ctx = cluster.ctx

    def ctx(layer: str, record: dict | None = None) -> StageContext:
        c = base_ctx(layer, record)
        return replace(c, options={**c.options, "libvirt_wait": True})

    cluster.ctx = ctx
    cluster.server, cluster.waited = server, waited
    return cluster


def _reservations(cluster) -> set[tuple[str, str, str]]:
    root = ET.fromstring(cluster.conn("localhost").networkLookupByName(NET).XMLDesc(0))
    return {(h.get("mac"), h.get("name"), h.get("ip")) for h in root.findall("./ip/dhcp/host")}


def _mac(name: str) -> str:
    return stable_mac(CLUSTER, name)


def test_plan_on_a_fresh_cluster_says_addresses_come_from_dhcp(make_cluster, tmp_path):
    cluster = make_cluster(_config(tmp_path, make_image(tmp_path / "img")))
    planned = {c.name: c for c in cluster.plan_all() if c.kind == "domain"}
    assert set(planned) == {LB, MASTER, WORKER}
    assert all(c.action == "create" and c.detail.endswith("address assigned by DHCP") for c in planned.values())


def test_plan_of_the_load_balancer_before_the_vms_exist_copes_with_unknown_addresses(make_cluster, tmp_path):
    from kubitect_plugins.keepalived_haproxy import KeepalivedHaproxy

    image = make_image(tmp_path / "img")
    with_lb = make_cluster(_config(tmp_path, image)).ctx("vms", {})
    assert [str(c) for c in asyncio.run(KeepalivedHaproxy().plan(with_lb))] == [
        f"create loadbalancer {LB} on {LB} (node not created yet; address assigned by DHCP)"]
    no_lb = make_cluster(_config(tmp_path, image, lb=False)).ctx("vms", {})
    assert [str(c) for c in asyncio.run(KeepalivedHaproxy().plan(no_lb))] == [
        f"keep endpoint {MASTER} (address assigned by DHCP) (no load balancers: first master)"]


def test_first_apply_records_each_lease_and_reserves_it_then_a_second_apply_keeps_everything(dhcp):
    changes = dhcp.apply_all()
    nodes = dhcp.records["vms"]["nodes"]
    leases = {name: nodes[name]["ip"] for name in (LB, MASTER, WORKER)}
    assert leases == {name: dhcp.server.leases[_mac(name)] for name in leases}  # what the server leased
    assert len(set(leases.values())) == 3
    assert all(nodes[n]["dhcp"] and nodes[n]["ready"] and nodes[n]["domain"] == n for n in leases)
    assert sorted(dhcp.waited) == sorted(leases.values())  # SSH was waited for at the lease
    # each lease is pinned by a reservation, reported as a change of the network
    assert _reservations(dhcp) == {(_mac(n), n, ip) for n, ip in leases.items()}
    pinned = sorted(str(c) for c in changes if c.kind == "network" and c.action == "change")
    assert pinned == sorted(f"change network {NET} on localhost (reserved {ip} for {n} (its DHCP lease))"
                            for n, ip in leases.items())

    again = dhcp.apply_all()
    assert {c.action for c in again} == {"keep"}, [str(c) for c in again if c.action != "keep"]
    assert {c.action for c in dhcp.plan_all()} == {"keep"}
    assert {n: dhcp.records["vms"]["nodes"][n]["ip"] for n in leases} == leases
    assert _reservations(dhcp) == {(_mac(n), n, ip) for n, ip in leases.items()}


def test_a_lease_that_moved_is_refused_and_the_reservation_restored(dhcp):
    dhcp.apply_all()
    recorded = dhcp.records["vms"]["nodes"][MASTER]["ip"]
    # someone removed the reservation, the master rebooted and dnsmasq gave it another address
    net = dhcp.conn("localhost").networkLookupByName(NET)
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
               f"<host mac='{_mac(MASTER)}' name='{MASTER}' ip='{recorded}'/>",
               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
    dhcp.server.move(_mac(MASTER), "192.168.113.77")
    with pytest.raises(LibvirtError) as err:
        dhcp.run("apply", "vms")
    text = str(err.value)
    assert f"node {MASTER}" in text and f"set up at {recorded}" in text and "192.168.113.77" in text
    assert f"virsh reboot {MASTER}" in text
    assert dhcp.records["vms"]["nodes"][MASTER]["ip"] == recorded  # never the new one, silently
    assert (_mac(MASTER), MASTER, recorded) in _reservations(dhcp)  # kubitect pinned it back
    # once the node has its address back (the reservation, a reboot), the apply goes through
    dhcp.server.move(_mac(MASTER), recorded)
    assert {c.action for c in dhcp.run("apply", "vms")} == {"keep"}


def test_a_restarted_node_whose_lease_moved_is_refused_before_anything_waits_for_it(dhcp):
    dhcp.apply_all()
    recorded = dhcp.records["vms"]["nodes"][WORKER]["ip"]
    dhcp.conn("localhost").lookupByName(WORKER).destroy()  # stopped: the vms stage starts it again
    dhcp.server.move(_mac(WORKER), "192.168.113.78")
    dhcp.waited.clear()
    with pytest.raises(LibvirtError, match=f"node {WORKER} .* set up at {recorded}"):
        dhcp.run("apply", "vms")
    assert "192.168.113.78" not in dhcp.waited and dhcp.records["vms"]["nodes"][WORKER]["ip"] == recorded


def test_network_stage_keeps_the_pinned_leases_and_drops_the_one_of_a_removed_node(dhcp, tmp_path):
    dhcp.loaded = load_config(_config(tmp_path, dhcp.image, workers=2))
    dhcp.apply_all()
    worker2 = f"{CLUSTER}-worker-2"
    assert worker2 in {name for _mac_, name, _ip in _reservations(dhcp)}
    dhcp.loaded = load_config(_config(tmp_path, dhcp.image, workers=1))
    changes = [str(c) for c in dhcp.run("apply", "network") if c.action != "keep"]
    assert changes == [f"change network {NET} on localhost (-1 reservations)"]
    assert {name for _m, name, _ip in _reservations(dhcp)} == {LB, MASTER, WORKER}
    dhcp.run("apply", "vms")
    assert worker2 not in dhcp.records["vms"]["nodes"]


def test_preflight_refuses_a_node_without_ip_in_bridge_mode(make_cluster, tmp_path):
    cluster = make_cluster(_config(tmp_path, make_image(tmp_path / "img"), mode="bridge"))
    problems = asyncio.run(cluster.provider.preflight(cluster.ctx("network"), cluster.hosts))
    assert sorted(problems) == sorted(
        f"node {n}: no ip, and in bridge mode the address a DHCP server outside kubitect hands out cannot "
        "be learned; give it an ip (or use network mode nat)" for n in (LB, MASTER, WORKER))


def test_a_hand_edited_lease_in_the_record_never_reaches_the_network_definition(dhcp):
    dhcp.apply_all()
    before = _reservations(dhcp)
    dhcp.records["vms"]["nodes"][MASTER]["ip"] = "192.168.113.9'/><host ip='192.168.113.10"
    with pytest.raises(LibvirtError, match=f"node {MASTER}: the vms record holds .* which is no IPv4 address"):
        dhcp.run("apply", "vms")
    assert _reservations(dhcp) == before
