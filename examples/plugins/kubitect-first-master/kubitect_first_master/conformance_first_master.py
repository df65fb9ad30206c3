"""first-master's own conformance check, run by `kubitect verify` (fixtures come by name).

The generic suite already checks that the API answers through the endpoint at the recorded
port; this adds what only this load balancer promises: the endpoint is the first master.
"""

from __future__ import annotations

import pytest

from kubitect_core.sdk.conformance import lb_facts, nodes_of


def test_endpoint_is_the_first_master(kubitect_inventory):
    facts = lb_facts(kubitect_inventory)
    if facts.get("implementation") != "first-master":
        pytest.skip(f"the load balancer is {facts.get('implementation') or 'unknown'}, not first-master")
    first = nodes_of(kubitect_inventory, "master")[0]
    assert kubitect_inventory["endpoint"] == first["ip"], (
        f"the endpoint is {kubitect_inventory['endpoint']}, not the first master {first['name']} ({first['ip']})")
    assert kubitect_inventory["api_port"] == 6443
