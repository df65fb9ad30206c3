"""Load balancers, whatever implements them: exactly one VIP holder, judged by `ip addr` and, where the
implementation names the node answering on the VIP (its whoami port), by who answers; the API
answers through the endpoint at the port the load balancer recorded.

What only one implementation has (keepalived-haproxy: its daemons and configs) is checked by a
module that implementation contributes itself (`kubitect_conformance_modules`).
"""

from __future__ import annotations

import pytest
from kubitect_conformance.cluster import kubernetes_facts
from kubitect_conformance.vip import holder_state, wait_single_holder


def test_exactly_one_vip_holder(request, load_balancers, vip):
    if not load_balancers:
        pytest.skip("the cluster has no load balancers")
    if not vip:
        pytest.skip("no VIP configured (cluster.nodes.loadBalancer.vip): HAProxy only, nothing to elect")
    vantage = request.getfixturevalue("vantage")
    state = wait_single_holder(load_balancers, vantage, vip, timeout=5)
    if len(state.by_address) > 1:
        pytest.fail(f"two VIP holders (split brain): {', '.join(state.by_address)} all carry {vip}; answering: "
                    f"{state.answering or 'nobody'}. Likely causes: VRRP adverts do not reach the other load balancer "
                    "(unicast peers, a firewall, another cluster using the same virtual_router_id), or the "
                    "address was added by hand")
    if not state.by_address:
        pytest.fail(f"no load balancer holds the VIP {vip}: keepalived is not running or every instance is "
                    "in FAULT (its HAProxy check fails)")
    assert state.single, (f"the VIP {vip} is on {state.by_address[0]} but {state.answering or 'nobody'} "
                          f"answers for it as seen from {vantage.name}: stale ARP or a stale address")


def test_api_answers_through_the_endpoint(kubitect_inventory, vantage, api_port):
    endpoint = kubitect_inventory.get("endpoint")
    if not endpoint:
        pytest.skip("no control-plane endpoint recorded")
    ok, detail = vantage.readyz(endpoint, api_port, timeout=3)
    if not ok and kubernetes_facts(kubitect_inventory) is None:
        pytest.skip(f"Kubernetes is not installed: no API server answers behind {endpoint}:{api_port} yet")
    assert ok, (f"GET https://{endpoint}:{api_port}/readyz from {vantage.name} failed ({detail}): the API "
                "is not reachable through the load balancers")


def test_vip_is_answered_by_a_load_balancer_of_this_cluster(request, load_balancers, vip):
    """The whoami answer names a load balancer of this cluster (not some other host on the VIP)."""
    if not load_balancers or not vip:
        pytest.skip("no VIP on load balancers")
    vantage = request.getfixturevalue("vantage")
    if vantage.whoami_port is None:
        pytest.skip("the load balancer implementation records no whoami port: the holder is judged by `ip addr`")
    state = holder_state(load_balancers, vantage, vip)
    names = {lb.name for lb in load_balancers}
    assert state.answering in names, (f"the VIP {vip} is answered by '{state.answering}', which is not one of "
                                      f"this cluster's load balancers ({', '.join(sorted(names))})")
