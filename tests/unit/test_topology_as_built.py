"""Unit tier: the as-built topology (config nodes + what the vms stage recorded), and the lease check.

What a user sees through it: a DHCP node has no address in a plan on a fresh cluster, and the
leased one everywhere after the vms stage; a recorded value wins over the config; a hand-edited
record that holds no address is refused with the file's meaning, not used in a shell command.
"""

from __future__ import annotations

import pytest
from kubitect_plugins.libvirt.readiness import LeaseChanged, check_lease

from kubitect_core.config import load_config
from kubitect_core.topology import RecordError, as_built, recorded_nodes

NAT_NO_IPS = """
hosts:
  - name: localhost
    connection: {type: local}
cluster:
  name: dh
  network: {cidr: 192.168.113.0/24}
  nodes:
    loadBalancer: {instances: [{id: 1}]}
    master: {instances: [{id: 1}]}
    worker: {instances: [{id: 1, ip: 192.168.113.31}]}
"""


def _topology(text: str = NAT_NO_IPS):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dh.yaml"
        path.write_text(text)
        return load_config(path).topology


def _vms_record(**nodes) -> dict:
    """The vms stage's record as the engine stores it: one slice per provider."""
    return {"libvirt": {"hosts": {"localhost": {"uri": "qemu:///system"}},
                        "nodes": {name: {"name": name, "host": "localhost", "domain": name, **rec}
                                  for name, rec in nodes.items()}}}


def test_before_the_vms_stage_a_dhcp_node_has_no_address_and_says_so():
    topo = as_built(_topology(), recorded_nodes({}))
    lb, master, worker = topo.nodes
    assert (lb.ip, lb.dhcp, lb.domain) == (None, True, None)
    assert master.address == "address assigned by DHCP"
    assert (worker.ip, worker.dhcp, worker.address) == ("192.168.113.31", False, "192.168.113.31")
    assert topo.endpoint == ""  # the one LB's address is not known yet


def test_after_the_vms_stage_every_node_carries_its_recorded_lease_and_the_endpoint_follows():
    rec = _vms_record(**{"dh-lb-1": {"ip": "192.168.113.57", "mac": "52:54:00:AA:00:01"},
                         "dh-master-1": {"ip": "192.168.113.88", "mac": "52:54:00:aa:00:02"},
                         "dh-worker-1": {"ip": "192.168.113.31", "mac": "52:54:00:aa:00:03"}})
    topo = as_built(_topology(), recorded_nodes(rec))
    lb, master, worker = topo.nodes
    assert (lb.ip, lb.mac, lb.domain, lb.host, lb.dhcp) == ("192.168.113.57", "52:54:00:aa:00:01", "dh-lb-1",
                                                            "localhost", True)
    assert master.ip == "192.168.113.88" and master.address == "192.168.113.88"
    assert topo.endpoint == "192.168.113.57"  # one LB, no VIP: the LB's lease
    assert topo.load_balancers == (lb,) and topo.masters == (master,) and topo.workers == (worker,)


def test_a_recorded_value_wins_over_the_config():
    """What exists is what later stages must talk to (the change rules refuse editing an IP)."""
    rec = _vms_record(**{"dh-worker-1": {"ip": "192.168.113.99", "mac": "52:54:00:aa:00:03", "host": "other"}})
    worker = as_built(_topology(), recorded_nodes(rec)).workers[0]
    assert (worker.ip, worker.host, worker.mac) == ("192.168.113.99", "other", "52:54:00:aa:00:03")
    assert worker.dhcp is False  # still a configured address


def test_nodes_of_several_providers_are_all_read_and_a_record_without_domain_falls_back_to_its_name():
    rec = {"libvirt": {"nodes": {"dh-lb-1": {"name": "dh-lb-1", "ip": "192.168.113.5"}}},
           "nspawn": {"nodes": {"dh-master-1": {"name": "dh-master-1", "ip": "192.168.113.6",
                                                "domain": "dh-master-1"}}}}
    lb, master, _ = as_built(_topology(), recorded_nodes(rec)).nodes
    assert (lb.ip, lb.domain) == ("192.168.113.5", "dh-lb-1")
    assert (master.ip, master.domain) == ("192.168.113.6", "dh-master-1")


def test_a_node_removed_from_the_config_is_not_resurrected_by_its_record():
    rec = _vms_record(**{"dh-worker-9": {"ip": "192.168.113.9"}})
    assert [n.name for n in as_built(_topology(), recorded_nodes(rec)).nodes] == \
        ["dh-lb-1", "dh-master-1", "dh-worker-1"]


def test_a_vip_stays_the_endpoint_after_the_vms_stage():
    text = NAT_NO_IPS.replace("loadBalancer: {instances: [{id: 1}]}",
                              "loadBalancer: {vip: 192.168.113.200, instances: [{id: 1}]}")
    rec = _vms_record(**{"dh-lb-1": {"ip": "192.168.113.57"}})
    assert as_built(_topology(text), recorded_nodes(rec)).endpoint == "192.168.113.200"


@pytest.mark.parametrize(("key", "value"), [("ip", "192.168.113.57; reboot"), ("ip", "fe80::1"),
                                            ("mac", "52:54:00:aa:00"), ("domain", "a b"), ("host", "../x")])
def test_a_record_that_holds_no_address_mac_or_name_is_refused(key, value):
    rec = _vms_record(**{"dh-lb-1": {"ip": "192.168.113.57", key: value}})
    with pytest.raises(RecordError, match=f"recorded {key} .* for node dh-lb-1.*kubitect run --stage vms"):
        as_built(_topology(), recorded_nodes(rec))


def test_a_lease_that_moved_away_from_the_recorded_address_is_refused_with_the_way_out():
    with pytest.raises(LeaseChanged) as err:
        check_lease("dh-master-1", "52:54:00:aa:00:02", "192.168.113.88", ["192.168.113.120"],
                    network="dh-network", host="localhost")
    text = str(err.value)
    for part in ("dh-master-1", "52:54:00:aa:00:02", "set up at 192.168.113.88", "192.168.113.120",
                 "reserved 192.168.113.88", "virsh reboot dh-master-1"):
        assert part in text, text


@pytest.mark.parametrize(("recorded", "current"), [
    ("192.168.113.88", ["192.168.113.88"]),  # unchanged
    ("192.168.113.88", ["192.168.113.120", "192.168.113.88"]),  # the recorded one is still among them
    ("192.168.113.88", []),  # no lease known (node down, server restarted): nothing proves a change
    (None, ["192.168.113.120"]),  # first lease of a new node: recorded, not compared
])
def test_a_lease_that_agrees_or_proves_nothing_passes(recorded, current):
    check_lease("n", "52:54:00:aa:00:02", recorded, current, network="dh-network", host="h")


@pytest.mark.parametrize("damaged", [[], ["x"], "completed", None, {"libvirt": []}, {"libvirt": {"nodes": ["x"]}}])
def test_a_vms_record_of_the_wrong_shape_records_no_node(damaged):
    assert recorded_nodes(damaged) == {}
