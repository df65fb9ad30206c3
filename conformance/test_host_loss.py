"""Host loss (issue 13): every VM on the VIP holder's host stops at once.

The promise of a cluster spread over hosts is that it survives losing one. The case: the cluster
is settled (one holder, answering); the prober runs at the vantage point; the holder's whole host
goes away (`--host-fault power`: its VMs destroyed through the host's provider, a power cut;
`--host-fault uplink`: in a lab, the host's cable pulled at the switch); then

- the VIP must answer again from a load balancer on another host within the budget the load
  balancer implementation declares for `host_loss` (keepalived: Master_Down_Interval) plus the
  suite's margin, measured as a gap;
- the endpoint keeps answering afterwards (the prober sees it settle), through what survives;
- no request sees two holders: after the first answer from the new holder, no request is
  answered by the old one, and exactly one surviving load balancer carries the VIP.

With an uplink cut the host comes back inside the case (and split brain is checked once it is
back); after a power cut the host's nodes stay off until `kubitect apply --reconcile` starts them.

Destructive on a real cluster: it runs only with `kubitect verify --chaos host` (which asks
first); otherwise it is skipped with that reason. The case depends only on "which node holds the
VIP" (`holder`) and "the nodes on a host" (the inventory), not on how the VIP is implemented.
"""

from __future__ import annotations

import time

import pytest
from kubitect_conformance.cluster import api_port, declared_failover, kubernetes_facts
from kubitect_conformance.hostloss import FaultUnavailable, fault_named
from kubitect_conformance.vip import (
    address_holders,
    api_target,
    declared_budget,
    wait_single_holder,
    whoami_target,
)

from kubitect_core import failover

pytestmark = [pytest.mark.failover, pytest.mark.chaos]

CASE = "host_loss"


@pytest.fixture(scope="module")
def chaos(pytestconfig) -> str:
    wanted = pytestconfig.getoption("--chaos", None) or ""
    if "host" not in wanted.split(","):
        pytest.skip("destructive: stops every VM on the VIP holder's host; run it with `kubitect verify --chaos host`")
    return pytestconfig.getoption("--host-fault", None) or "power"


def test_host_loss_moves_the_vip_to_another_host(chaos, request, kubitect_inventory, vip, record_property,
                                                 pytestconfig):
    lbs = request.getfixturevalue("load_balancers")
    if len(lbs) < 2 or not vip:
        pytest.skip("host loss needs a VIP and at least 2 load balancers")
    vantage = request.getfixturevalue("vantage")
    nodes = kubitect_inventory["nodes"]
    declared = declared_failover(kubitect_inventory)
    margin = pytestconfig.getoption("--failover-margin", None)
    margin = failover.DEFAULT_MARGIN_S if margin is None else float(margin)
    deadline = float(declared.get("settle_s") or 10.0)
    budget = declared_budget(declared, CASE, margin)
    if budget is None:
        pytest.skip(f"the load balancer implementation declares no failover budget for {CASE}")

    state = wait_single_holder(lbs, vantage, vip, deadline)
    assert state.single, f"before the host loss: expected exactly one VIP holder; {state.describe()}"
    holder = state.single
    host = next(n["host"] for n in nodes if n["name"] == holder)
    victims = [n["name"] for n in nodes if n.get("host") == host]
    survivors = [lb for lb in lbs if next(n["host"] for n in nodes if n["name"] == lb.name) != host]
    if not survivors:
        pytest.skip(f"every load balancer runs on {host}: losing that host loses the VIP, there is nothing "
                    "to fail over to (place load balancers on different hosts)")
    if vantage.node is not None and vantage.node.name in victims:
        pytest.fail(f"the vantage point {vantage.node.name} runs on {host}, the host to be lost: pass "
                    "--failover-vantage NODE with a node on another host")
    fault = fault_named(chaos, kubitect_inventory)
    try:
        fault.check(host)
    except FaultUnavailable as exc:
        pytest.skip(str(exc))
    survivor_names = {lb.name for lb in survivors}
    port = api_port(kubitect_inventory)
    ok, _ = vantage.readyz(vip, port, timeout=3)
    if not ok and kubernetes_facts(kubitect_inventory) is not None:
        pytest.fail(f"the API does not answer through {vip}:{port} before the host loss")
    if not ok and vantage.whoami_port is None:
        pytest.skip(f"no API server answers behind {vip}:{port} yet and the load balancer has no whoami port")
    target = api_target(port) if ok else whoami_target(vantage.whoami_port)
    for key, value in {"failover_case": CASE, "host_fault": fault.name, "lost_host": host,
                       "lost_nodes": ",".join(victims), "holder_before": holder, "budget_ms": budget.ms,
                       "budget_formula": budget.formula, "vantage": vantage.name, "vantage_reason": vantage.why,
                       "margin_ms": round(margin * 1000), "target": target.label}.items():
        record_property(key, value)

    injected: dict = {}
    takeover: dict = {}
    limit = max(8.0, budget.ms / 1000 * 3)

    def inject() -> None:
        injected.update(fault.cut(host, victims))
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if vantage.holder(vip) in survivor_names:
                takeover["ms"] = round((time.monotonic() - t0) * 1000, 1)
                break

    try:
        result = vantage.probe(vip, inject, target=target, max_seconds=limit, min_seconds=budget.ms / 1000)
        gap = result.get("gap_ms")
        record_property("gap_ms", "unrecovered" if gap is None else gap)
        record_property("outages", result.get("outages"))
        record_property("total_outage_ms", result.get("total_outage_ms"))
        record_property("takeover_ms", takeover.get("ms", "none"))
        if "spread_ms" in injected:
            record_property("cut_spread_ms", injected["spread_ms"])
        after = wait_single_holder(survivors, vantage, vip, deadline)
        record_property("holder_after", after.answering or "nobody")
        assert gap is not None and result.get("recovered"), (
            f"{CASE}: after losing {host} ({', '.join(victims)}, {fault.name}) the VIP {vip}:{target.port} did "
            f"not answer again within {limit:.0f} s (budget {budget.ms:.0f} ms = {budget.formula}); "
            f"{after.describe()}")
        assert gap <= budget.ms, (f"{CASE}: losing {host} ({fault.name}) cost a {gap:.0f} ms gap, over the budget "
                                  f"of {budget.ms:.0f} ms ({budget.formula})")
        assert after.answering and after.answering != holder, (
            f"{CASE}: the VIP should have moved to a load balancer on another host than {host}; {after.describe()}")
        if not target.tls:  # whoami: the answers name the load balancer each request reached
            names = [name for name, _count in result.get("answers", [])]
            if after.answering in names:
                late = names[names.index(after.answering):]
                assert holder not in late, (f"{CASE}: requests were answered by {holder} after {after.answering} "
                                            f"had taken over (two holders seen by clients): {result['answers']}")
        # Exactly one surviving load balancer carries the VIP while the host is gone.
        seen = [address_holders(survivors, vip) for _ in range(3)]
        assert all(len(s) == 1 for s in seen), f"{CASE}: surviving load balancers holding {vip}: {seen}"
    finally:
        if fault.restores_itself:
            fault.restore(host, victims)
    if fault.restores_itself:
        _back_without_split_brain(lbs, vantage, vip, declared, deadline, host, record_property)
    else:
        record_property("host_back", f"nodes {', '.join(victims)} stay off: `kubitect apply --reconcile` "
                                     "starts them again")


def _back_without_split_brain(lbs, vantage, vip, declared, deadline, host, record_property) -> None:
    """Once the host is back, the cluster settles on one holder and stays there (no split brain)."""
    settled = wait_single_holder(lbs, vantage, vip, deadline + 10)
    assert settled.single, f"{CASE}: after {host} came back, no single VIP holder: {settled.describe()}"
    samples = []
    until = time.monotonic() + float(declared.get("split_brain_watch_s") or 2.0)
    while time.monotonic() < until:
        samples.append((address_holders(lbs, vip), vantage.holder(vip)))
    record_property("split_brain_samples", len(samples))
    bad = [s for s in samples if len(s[0]) != 1 or s[1] != settled.single]
    assert not bad, (f"{CASE}: split brain after {host} came back: {len(bad)} of {len(samples)} samples show "
                     f"holders {bad[0][0]} answering {bad[0][1]} (settled holder was {settled.single})")
    record_property("host_back", f"{host} back; VIP settled on {settled.single}")
