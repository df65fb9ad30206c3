"""VIP failover every implementation must survive, held to the budget the implementation declares.

The case here is the one no VIP implementation can opt out of: the holder's link is cut (inside
the node, by a transient unit that brings it back after a few seconds, since SSH to that node is
gone meanwhile). Clients measured at the vantage point must get the API back through the VIP
from another node within the implementation's declared `link_cut` budget plus the suite's
margin, and once the link is back there must be exactly one holder (no split brain).

The faults only one implementation has (keepalived stopped, HAProxy killed, ...) are that
implementation's own failover module, contributed through `kubitect_conformance_modules` and
run with the same kit (`kubitect_conformance.failover_kit`, in the SDK as
`kubitect_core.sdk.conformance`). The whole host lost is `test_host_loss.py` (with --chaos).
"""

from __future__ import annotations

import secrets
import time

import pytest
from kubitect_conformance.failover_kit import (
    assert_no_split_brain,
    judge,
    measure,
    root,
    wait_ssh,
)

pytestmark = pytest.mark.failover

CASE = "link_cut"


def test_failover_d_link_cut_without_split_brain(failover_bench, record_property):
    bench = failover_bench
    budget = bench.budget(CASE)
    if budget is None:
        pytest.skip(f"the load balancer implementation declares no failover budget for {CASE}")
    holder = bench.settle(None, "before (d)")
    node = bench.by_name(holder)
    nic = node.nic()
    assert nic, f"no interface on {holder} carries {node.ip}"
    cut_s = round(budget.ms / 1000 + 1.5, 1)
    record_property("link_cut_s", cut_s)
    # The link comes back by itself (a transient unit), since SSH to the node dies with it. The
    # default route goes with the link and is put back. The first sleep lets this SSH reply out.
    script = (f"sleep 0.3; r=$(ip -4 route show default dev {nic}); ip link set dev {nic} down; sleep {cut_s}; "
              f"ip link set dev {nic} up; if [ -n \"$r\" ]; then ip route replace $r; fi")
    unit = f"kubitect-linkcut-{secrets.token_hex(3)}"
    started = time.monotonic()
    result, budget = measure(
        record_property, bench, CASE, holder,
        lambda: root(node, f"systemd-run --quiet --collect --unit={unit} sh -c '{script}'", "cutting the link"),
        # The cut starts after a delay: watch at least the budget's length (the cut lasts 1.5 s longer).
        max_seconds=cut_s + 1, min_seconds=budget.ms / 1000)
    state_during = bench.vantage.holder(bench.vip) if bench.vantage.whoami_port else None
    record_property("holder_after", state_during or "unknown (no whoami port)")
    time.sleep(max(0.0, cut_s + 0.5 - (time.monotonic() - started)))
    assert wait_ssh(node, 20), f"{holder} did not come back on the network after its link was restored"
    judge(CASE, f"cutting {nic}", result, budget, bench, holder)
    if bench.vantage.whoami_port:
        others = {h.name for h in bench.others(holder)}
        assert state_during in others, (f"{CASE}: another node ({', '.join(sorted(others))}) should answer for "
                                        f"the VIP while {holder} is cut off; answering: {state_during or 'nobody'}")
    final = bench.settle(None, "after the link came back")
    assert_no_split_brain(record_property, bench, CASE, final)
