"""Lab tier: the plugin's rendered HAProxy + keepalived configs on namespace hosts, real daemons.

Two load balancers (lb1 priority 200, lb2 priority 100), three masters running a stand-in API
server (a test double for kube-apiserver: TLS, GET /readyz -> 200 + its name), a client namespace
for the prober. The configs are rendered by kubitect_plugins.keepalived_haproxy.render, validated
with `haproxy -c` / `keepalived -t` and started directly (the apply path over SSH is tested in
test_lb_apply.py when the remote layer is available). Each failover gap is measured from the
client through VIP:6443 and asserted against the budget derived from the configured timers.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from kubitect_plugins.keepalived_haproxy.budgets import expected_budget
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings, ranked_priorities
from lb_lab import LB_HOSTS, LbLab, is_root, lab_topology, missing_binaries

from kubitect_core.failover import DEFAULT_MARGIN_S

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not is_root(), reason="the namespace lab needs root (network namespaces, port 6443)"),
    pytest.mark.skipif(bool(missing_binaries()), reason=f"missing binaries: {missing_binaries()}"),
]

# The settings under test are the plugin's defaults: what a user with an original config gets.
# This lab has no systemd and no process events (namespaces): HAProxy's death is seen by the check.
SETTINGS = VrrpSettings()
PRIORITIES = ranked_priorities({"lb1": 200, "lb2": 100}, SETTINGS)


@pytest.fixture(scope="module")
def lb_lab():
    lab = LbLab(vrrp=SETTINGS)
    try:
        lab.up()
        lab.wait_holder("lb1", timeout=15)
        yield lab
    finally:
        lab.down()


def _names_through(lab: LbLab, address: str, count: int = 30) -> list[str]:
    """Which masters answered `count` fresh TLS requests sent from the client to address:6443."""
    code = (
        "import asyncio,sys\n"
        "from kubitect_core.failover import readyz\n"
        "async def main():\n"
        f"    for _ in range({count}):\n"
        f"        ok, body = await readyz('{address}', 6443, timeout=2)\n"
        "        print(body if ok else 'FAIL:' + body)\n"
        "asyncio.run(main())\n"
    )
    return lab.lab.exec("cl", sys.executable, "-c", code).stdout.split()


def test_exactly_one_holder_and_the_client_reaches_every_master_through_the_vip(lb_lab):
    assert lb_lab.holders() == ["lb1"], "exactly one load balancer (the higher priority) holds the VIP"
    assert lb_lab.answering_holder() == "lb1"
    names = _names_through(lb_lab, lb_lab.topology.vip)
    assert not [n for n in names if n.startswith("FAIL")], names
    assert set(names) == {"m1", "m2", "m3"}, f"HAProxy balances over all masters: {names}"


def test_a_dead_api_server_leaves_the_backend_quickly(lb_lab):
    """HAProxy's /readyz check takes a master out within inter x fall, so clients stop seeing errors."""
    api = lb_lab.apis["m2"]
    assert api.poll() is None, "the stand-in API server runs in m2"
    os.kill(api.pid, signal.SIGSTOP)  # hung, not refusing: only the health check can notice
    try:
        # haproxy.cfg.j2: inter 1 s, then fastinter 0.5 s after a failure, fall 2, timeout check 2 s.
        time.sleep(1.0 + 2 * 2.0 + 0.5 + 0.5)
        names = _names_through(lb_lab, lb_lab.topology.vip, count=20)
        assert names and set(names) <= {"m1", "m3"}, f"m2 must be out of the backend: {names}"
    finally:
        os.kill(api.pid, signal.SIGCONT)


CASES = {
    # name: (inject on the holder, restore)
    "keepalived_stopped": (LbLab.stop_keepalived, LbLab.start_keepalived),
    "haproxy_killed": (LbLab.kill_haproxy, LbLab.start_haproxy),
    "keepalived_crashed": (LbLab.crash_keepalived, LbLab.start_keepalived),
    "link_cut": (LbLab.cut_link, LbLab.restore_link),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failover_moves_the_vip_to_the_backup_within_the_timer_budget(lb_lab, case):
    inject, restore = CASES[case]
    holder = lb_lab.settled_holder()
    backup = next(lb for lb in lb_lab.lbs if lb != holder)
    budget_ms = expected_budget(SETTINGS, backup_priority=PRIORITIES[backup], exit_events=False,
                                margin_s=DEFAULT_MARGIN_S)[case]
    try:
        # Without any failed request within budget + 1 s the prober stops (a seamless handover).
        result = lb_lab.measure(lambda: inject(lb_lab, holder), quiet=budget_ms / 1000 + 1)
        print(f"\nfailover {case}: gap {result['gap_ms']} ms (budget {budget_ms} ms, advert "
              f"{SETTINGS.advert_int} s, {result['failures']}/{result['probes']} probes failed)")
        assert result["recovered"], f"the API never came back through the VIP after {case}"
        assert lb_lab.answering_holder() == backup, "the backup answers for the VIP"
        assert result["gap_ms"] <= budget_ms, (
            f"{case}: gap {result['gap_ms']} ms exceeds the budget {budget_ms} ms derived from the timers")
        # A crashed keepalived leaves the VIP address on the old holder, whose HAProxy still
        # serves: clients may see no failure at all while the backup takes over (gap 0).
        expected_outages = {0, 1} if case == "keepalived_crashed" else {1}
        assert result["outages"] in expected_outages, f"{case}: the VIP flapped ({result})"
    finally:
        restore(lb_lab, holder)
    # nopreempt (the default profile): the VIP stays on the backup once the old holder is back
    time.sleep(3 * SETTINGS.advert_int + 0.5)
    assert lb_lab.settled_holder() == backup


def test_single_lb_without_vip_runs_haproxy_only_and_serves_the_api():
    """Kubitect's 1-LB-no-VIP mode: no keepalived, the endpoint is the LB's own IP."""
    lab = LbLab(topology=lab_topology(vip=None, lbs=1))
    try:
        lab.up()
        assert not lab.keepalived, "no keepalived without a VIP"
        names = _names_through(lab, LB_HOSTS["lb1"], count=12)
        assert set(names) == {"m1", "m2", "m3"}, names
    finally:
        lab.down()


def test_multicast_vrrp_with_nopreempt_leaves_the_vip_on_the_backup_when_the_primary_returns():
    """The two non-default options at once (one lab): multicast adverts, nopreempt."""
    lab = LbLab(vrrp=VrrpSettings(preempt=False, unicast=False))
    try:
        lab.up()
        conf = open(lab.layout("lb1").keepalived_conf).read()
        assert "unicast_peer" not in conf and "nopreempt" in conf
        lab.wait_holder("lb1")  # both start as BACKUP; the higher priority wins the first election
        lab.stop_keepalived("lb1")
        lab.wait_holder("lb2", timeout=5)
        lab.start_keepalived("lb1")
        time.sleep(3 * SETTINGS.advert_int + 1.5)  # longer than a preempting takeover would need
        assert lab.holders() == ["lb2"] and lab.answering_holder() == "lb2"
    finally:
        lab.down()
