"""The failover cases only keepalived + HAProxy have, contributed to the verify stage through the
`kubitect_conformance_modules` hook, for both implementations of this package (keepalived-haproxy
on the load balancers, control-plane-vip on the masters).

Each case: the VIP is settled (one holder, answering), the prober runs at the vantage point, the
fault is injected on the holder, the gap is held to the budget this plugin declared when it
applied (`budgets.py`, recorded as the load balancer's `failover`) plus the suite's margin, and
what was broken is restored before the next case.

(a) keepalived stopped (systemctl stop: priority-0 advert), (b) HAProxy killed (SIGKILL of its
process group; systemd's Restart=always is held off with a runtime drop-in, else it would hide
whether keepalived tracks HAProxy at all), (c) keepalived crashed (SIGKILL of its whole process
group: no goodbye advert; the dead holder keeps the VIP address, so the takeover time is measured
too), (e) the old holder back: VIP placement as preempt says, (f) with the VIP on the masters:
the holder's own API server is killed (its port then refuses), so the holder's HAProxy must
send every client to the other masters until its supervisor restarts it; the VIP does not move.
The link cut (d) is the generic suite's.

The kit and fixtures come from the SDK (`kubitect_core.sdk.conformance`) and by name
(`failover_bench`, `kubitect_inventory`); nothing of this plugin is imported, so the module runs
under whatever name pytest gives it.
"""

from __future__ import annotations

import pytest

from kubitect_core.sdk.conformance import (
    API_SERVER_PORT,
    Bench,
    ClusterHost,
    expect_new_holder,
    holder_state,
    judge,
    kill_group,
    lb_facts,
    measure,
    root,
    wait_single_holder,
)

pytestmark = pytest.mark.failover

IMPLEMENTATIONS = ("keepalived-haproxy", "control-plane-vip")
DROPIN_DIR = "/run/systemd/system/haproxy.service.d"
DROPIN = f"{DROPIN_DIR}/50-kubitect-failover.conf"
RESTART_WAIT_S = 90  # kubelet restarts a crashed static pod with a back-off of 10 s and more


class Election:
    """Where VRRP puts the VIP, from what the plugin recorded: its priorities and preempt."""

    def __init__(self, bench: Bench, facts: dict) -> None:
        self.bench = bench
        self.priorities = dict((facts.get("vrrp") or {}).get("priorities") or {})
        self.preempt = bool((facts.get("failover") or {}).get("preempt"))

    def priority(self, node: ClusterHost) -> int:
        if node.name in self.priorities:
            return int(self.priorities[node.name])
        p = node.info.get("priority")
        return int(p) if p is not None else 10

    def ranked(self, exclude: str | None = None) -> list[ClusterHost]:
        """Nodes by election order: priority, then the higher IP (VRRP's tie-break)."""
        def key(n: ClusterHost):
            return (self.priority(n), tuple(int(x) for x in (n.ip or "0.0.0.0").split(".")))
        return sorted((n for n in self.bench.holders if n.name != exclude), key=key, reverse=True)

    def placement(self) -> str | None:
        """Where the VIP must be once every node is healthy: with preempt, the node of strictly
        highest priority (an equal priority never preempts); otherwise wherever it settled."""
        first, second = self.ranked()[:2]
        if self.preempt and self.priority(first) > self.priority(second):
            return first.name
        return None

    def settle(self, what: str) -> str:
        return self.bench.settle(self.placement(), what)


@pytest.fixture(scope="module")
def election(failover_bench, kubitect_inventory) -> Election:
    facts = lb_facts(kubitect_inventory)
    implementation = facts.get("implementation", "keepalived-haproxy")
    if implementation not in IMPLEMENTATIONS or "vrrp" not in facts:
        pytest.skip(f"the VIP is not kept by keepalived here (load balancer: {implementation})")
    e = Election(failover_bench, facts)
    e.settle("before the keepalived failover cases")
    return e


def test_failover_a_keepalived_stopped(election, failover_bench, record_property):
    bench = failover_bench
    holder = election.settle("before (a)")
    backup = election.ranked(exclude=holder)[0].name
    node = bench.by_name(holder)
    try:
        result, budget = measure(record_property, bench, "keepalived_stopped", holder,
                                 lambda: root(node, "systemctl stop keepalived", "systemctl stop keepalived"),
                                 takeover_by=backup)
        expect_new_holder(record_property, bench, "keepalived_stopped", holder)
        judge("keepalived_stopped", "a graceful keepalived stop", result, budget, bench, holder)
    finally:
        root(node, "systemctl start keepalived", "restarting keepalived")
    election.settle("after restoring (a)")


def test_failover_b_haproxy_killed(election, failover_bench, record_property):
    bench = failover_bench
    holder = election.settle("before (b)")
    backup = election.ranked(exclude=holder)[0].name
    node = bench.by_name(holder)
    root(node, f"mkdir -p {DROPIN_DIR} && printf '[Service]\\nRestart=no\\n' > {DROPIN} && systemctl daemon-reload",
         "holding off HAProxy's automatic restart")
    try:
        budget = bench.budget("haproxy_killed")
        result, budget = measure(record_property, bench, "haproxy_killed", holder,
                                 lambda: root(node, kill_group("haproxy"), "killing HAProxy"),
                                 max_seconds=max(8.0, (budget.ms if budget else 0) / 1000 * 3), takeover_by=backup)
        hint = (f"The VIP stayed on {holder} while its HAProxy was dead: keepalived does not track HAProxy "
                f"there (no working vrrp_script/track_script), so clients lose the API until someone restarts it.")
        judge("haproxy_killed", "killing HAProxy", result, budget, bench, holder, untracked_hint=hint)
        expect_new_holder(record_property, bench, "haproxy_killed", holder)
    finally:
        root(node, f"rm -f {DROPIN} && systemctl daemon-reload && systemctl reset-failed haproxy; "
                   "systemctl start haproxy", "restarting HAProxy")
    election.settle("after restoring (b)")


def test_failover_c_keepalived_crashed(election, failover_bench, record_property):
    bench = failover_bench
    holder = election.settle("before (c)")
    backup = election.ranked(exclude=holder)[0].name
    node = bench.by_name(holder)
    try:
        budget = bench.budget("keepalived_crashed")
        result, budget = measure(record_property, bench, "keepalived_crashed", holder,
                                 lambda: root(node, kill_group("keepalived"), "SIGKILL of keepalived's process group"),
                                 takeover_by=backup, quiet=(budget.ms if budget else 0) / 1000 + 1)
        left = node.root("pgrep -x keepalived || true").stdout.split()
        assert not left, f"keepalived processes on {holder} survived SIGKILL of the group: {left}"
        judge("keepalived_crashed", "a keepalived crash (SIGKILL of the whole group)", result, budget, bench, holder)
        took, resolution = result["takeover_ms"], result["takeover_resolution_ms"]
        assert took is not None and took <= budget.ms + resolution, (
            f"keepalived_crashed: {backup} took over {'after ' + format(took, '.0f') + ' ms' if took else 'never'}"
            f", over the budget of {budget.ms:.0f} ms ({budget.formula}) + {resolution:.0f} ms poll resolution "
            "(the slowest holder query measured)")
        state = holder_state(bench.holders, bench.vantage, bench.vip)
        record_property("holder_after", state.answering or "nobody")
        assert state.answering == backup, f"keepalived_crashed: {backup} should answer for the VIP; {state.describe()}"
    finally:
        root(node, "systemctl reset-failed keepalived; systemctl start keepalived", "restarting keepalived")
    election.settle("after restoring (c)")


def test_failover_e_old_holder_back(election, failover_bench, record_property):
    bench = failover_bench
    holder = election.settle("before (e)")
    node = bench.by_name(holder)
    root(node, "systemctl stop keepalived", "stopping keepalived")
    try:
        backup = bench.settle(None, f"(e) after stopping keepalived on {holder}")
        expected = holder if (election.preempt and election.priority(node) > election.priority(
            bench.by_name(backup))) else backup
        record_property("preempt", str(election.preempt).lower())
        record_property("expected_holder", expected)
        result, budget = measure(record_property, bench, "holder_back", backup,
                                 lambda: root(node, "systemctl start keepalived", "starting keepalived"),
                                 max_seconds=bench.settle_s + 2, quiet=bench.settle_s)
    except BaseException:
        node.root("systemctl start keepalived")
        raise
    state = wait_single_holder(bench.holders, bench.vantage, bench.vip, bench.settle_s, expected)
    record_property("holder_after", state.answering or "nobody")
    mode = "preempt" if election.preempt else "nopreempt"
    assert state.single == expected, (f"holder_back ({mode}): the VIP should be on {expected} after {holder} "
                                      f"returned; {state.describe()}")
    judge("holder_back", f"{holder} returning ({mode})", result, budget, bench, backup)


def test_failover_f_api_server_on_the_holder_killed(election, failover_bench, record_property):
    """control-plane-vip only: the holder's own API server dies; its supervisor (kubelet, systemd)
    brings it back. Meanwhile the holder's HAProxy must send every client to the other masters,
    and the VIP must not move (keepalived tracks HAProxy, which is fine)."""
    bench = failover_bench
    budget = bench.budget("apiserver_stopped")
    if budget is None:
        pytest.skip("the load balancers are not the masters: no API server runs beside HAProxy")
    if not bench.target.tls:
        pytest.skip("no API server answers behind the VIP yet (Kubernetes not installed)")
    holder = election.settle("before (f)")
    node = bench.by_name(holder)
    if node.run("command -v fuser || test -x /usr/bin/fuser").rc != 0:
        pytest.skip(f"{holder} has no fuser (psmisc) to kill the process serving port {API_SERVER_PORT}")
    listening = f'ss -Hltn "sport = :{API_SERVER_PORT}" | grep -q .'  # double quotes: it goes inside sh -c '...'
    # SIGKILL of whatever listens on the API servers' port (a static pod, k3s, a unit): what a
    # crash looks like to HAProxy, whose connections are then refused.
    kill = f"fuser -k -KILL -n tcp {API_SERVER_PORT}"
    result, budget = measure(record_property, bench, "apiserver_stopped", holder,
                             lambda: root(node, kill, f"killing the API server on port {API_SERVER_PORT}"),
                             quiet=budget.ms / 1000 + 1.5, min_seconds=budget.ms / 1000)
    judge("apiserver_stopped", f"killing the API server (port {API_SERVER_PORT})", result, budget, bench, holder)
    state = holder_state(bench.holders, bench.vantage, bench.vip)
    record_property("holder_after", state.answering or "nobody")
    assert state.single == holder, (f"apiserver_stopped: the VIP should stay on {holder} (its HAProxy serves "
                                    f"the other API servers); {state.describe()}")
    res = node.root(f"timeout {RESTART_WAIT_S} sh -c 'until {listening}; do sleep 0.5; done'")
    assert res.rc == 0, (f"the API server on {holder} did not come back within {RESTART_WAIT_S} s after it was "
                         "killed: whatever supervises it (kubelet, systemd) did not restart it")
    election.settle("after restoring (f)")
