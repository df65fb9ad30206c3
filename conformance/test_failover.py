"""The VIP failover matrix: faults injected on the VIP holder, the gap measured through VIP:6443.

Each case: the cluster is settled (exactly one holder, answering), the prober runs at the
vantage point (a node outside the load balancers, see `kubitect_conformance.vip`), the fault is
injected on the holder, the gap is the prober's (first failed request -> first success after
it, in ms) and is asserted against a budget derived from the configured VRRP timers plus a
stated margin. Every case then restores what it broke and re-checks a single holder, placed as
preempt/nopreempt says, before the next case starts. Gaps, budgets and holders are recorded as
JUnit properties, which the verify stage turns into the report's failover table.

(a) keepalived stopped (systemctl stop: priority-0 advert), (b) HAProxy killed (SIGKILL of its
process group; systemd's Restart=always is held off with a runtime drop-in, else it would hide
whether keepalived tracks HAProxy at all), (c) keepalived crashed (SIGKILL of its whole process
group: no goodbye advert; the dead holder keeps the VIP address, so the takeover time is measured
too), (d) the holder's link cut inside the node by a
transient unit that brings it back after a few seconds (SSH to that node is gone meanwhile), with
a split-brain check once it is back, (e) the old holder back: VIP placement as preempt says.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubitect_conformance.cluster import API_PORT, ClusterHost, kubernetes_facts, vrrp_settings
from kubitect_conformance.vip import (
    API_TARGET,
    WHOAMI_TARGET,
    Budget,
    Target,
    Vantage,
    address_holders,
    budgets,
    holder_state,
    takeover_deadline_s,
    wait_single_holder,
)

from kubitect_core import failover

pytestmark = pytest.mark.failover

DROPIN_DIR = "/run/systemd/system/haproxy.service.d"
DROPIN = f"{DROPIN_DIR}/50-kubitect-failover.conf"
POLL_RESOLUTION_MS = 300  # floor of the takeover-time resolution; the real one is measured per case


def kill_group(unit: str) -> str:
    """Shell: SIGKILL the whole process group of a unit's main process (parent and children at once).

    Not `systemctl kill`: inside containers it can fail to signal a unit's other processes, and a
    surviving keepalived child makes the next start exit at once ("already running").
    """
    return (f"pid=$(systemctl show -p MainPID --value {unit}); pg=$(ps -o pgid= -p \"$pid\" | tr -d ' '); "
            f"[ -n \"$pg\" ] && [ \"$pg\" -gt 1 ] && kill -9 -\"$pg\"")


@dataclass
class Matrix:
    lbs: list[ClusterHost]
    vantage: Vantage
    vip: str
    settings: Any
    margin_s: float
    target: Target = API_TARGET
    rendered_priorities: dict = field(default_factory=dict)

    def by_name(self, name: str) -> ClusterHost:
        return next(lb for lb in self.lbs if lb.name == name)

    def priority(self, lb: ClusterHost) -> int:
        """The priority keepalived runs with: as the load balancer plugin recorded it (it may rank
        the configured ones, keeping their order), else the configured one, else 10."""
        if lb.name in self.rendered_priorities:
            return int(self.rendered_priorities[lb.name])
        p = lb.info.get("priority")
        return int(p) if p is not None else 10  # the plugin's default (render.py)

    def ranked(self, exclude: str | None = None) -> list[ClusterHost]:
        """LBs by election order: priority, then the higher IP (VRRP's tie-break)."""
        def key(lb: ClusterHost):
            return (self.priority(lb), tuple(int(x) for x in (lb.ip or "0.0.0.0").split(".")))
        return sorted((lb for lb in self.lbs if lb.name != exclude), key=key, reverse=True)

    @property
    def preferred(self) -> str:
        return self.ranked()[0].name

    def budget(self, case: str, backup: str) -> Budget:
        return budgets(self.settings, self.priority(self.by_name(backup)), self.margin_s)[case]

    @property
    def deadline_s(self) -> float:
        return takeover_deadline_s(self.settings, min(self.priority(lb) for lb in self.lbs))

    def settle(self, expected: str | None = None, what: str = "") -> str:
        """Waits for a single answering holder (the expected one, if given); fails naming the state."""
        state = wait_single_holder(self.lbs, self.vantage, self.vip, self.deadline_s, expected)
        if not state.single or (expected and state.single != expected):
            want = f"{expected} as the only VIP holder" if expected else "exactly one VIP holder"
            pytest.fail(f"{what}: expected {want} within {self.deadline_s:.1f} s; now {state.describe()}")
        return state.single

    def placement_after_restore(self) -> str | None:
        """Where the VIP must be once every LB is healthy again: with preempt, the LB of strictly
        highest priority (an equal priority never preempts); otherwise wherever it settled."""
        first, second = self.ranked()[:2]
        if self.settings.preempt and self.priority(first) > self.priority(second):
            return first.name
        return None


@pytest.fixture(scope="module")
def matrix(request, kubitect_inventory, vip, pytestconfig) -> Matrix:
    """The settled cluster the cases run on; skipped (with the reason) without two LBs and a VIP."""
    lbs = [n["name"] for n in kubitect_inventory["nodes"] if n["role"] == "lb"]
    if len(lbs) < 2:
        pytest.skip(f"the failover matrix needs at least 2 load balancers; this cluster has {len(lbs)}")
    if not vip:
        pytest.skip("no VIP configured (cluster.nodes.loadBalancer.vip): there is nothing to fail over")
    load_balancers, vantage = request.getfixturevalue("load_balancers"), request.getfixturevalue("vantage")
    margin = pytestconfig.getoption("--failover-margin", None)
    m = Matrix(list(load_balancers), vantage, vip, vrrp_settings(kubitect_inventory),
               failover.DEFAULT_MARGIN_S if margin is None else float(margin),
               rendered_priorities=rendered_priorities(kubitect_inventory))
    m.settle(m.placement_after_restore(), "before the failover matrix")
    m.target = choose_target(m, kubernetes_facts(kubitect_inventory) is not None)
    return m


def rendered_priorities(inventory: dict) -> dict:
    """{load balancer: priority} as the load balancer stage recorded it ({} when it did not)."""
    lb_facts = (inventory.get("facts") or {}).get("loadbalancers") or {}
    return dict((lb_facts.get("vrrp") or {}).get("priorities") or {})


def choose_target(m: Matrix, kubernetes_installed: bool) -> Target:
    """The API (TLS /readyz through VIP:6443) when it answers; HAProxy's whoami frontend when no
    API server can answer yet (Kubernetes not installed), so the VIP failover is still measured."""
    ok, detail = m.vantage.readyz(m.vip, API_PORT, timeout=3)
    if ok:
        return API_TARGET
    if kubernetes_installed:
        pytest.fail(f"the API does not answer through {m.vip}:{API_PORT} from {m.vantage.name} ({detail}) before "
                    "any fault was injected: fix test_api_answers_through_the_endpoint first")
    return WHOAMI_TARGET


def _root(lb: ClusterHost, command: str, what: str) -> None:
    res = lb.root(command)
    assert res.rc == 0, f"{what} on {lb.name} failed: {(res.stderr or res.stdout).strip()[-400:]}"


def _measure(record_property, matrix: Matrix, case: str, holder: str, backup: str, inject, *,
             max_seconds: float | None = None, quiet: float | None = None,
             takeover_by: str | None = None, min_seconds: float = 0.0) -> tuple[dict, Budget]:
    """Runs the prober around `inject`; with `takeover_by`, also times how long until that LB answers.

    The takeover time is polled from this process while the prober runs at the vantage point
    (resolution: one holder query, ~0.2 s); it shows when the backup really took over, which a
    keepalived crash hides from the gap (the dead instance's address and HAProxy keep serving).
    """
    budget = matrix.budget(case, backup)
    limit = max_seconds or max(6.0, budget.ms / 1000 * 3)
    takeover: dict[str, float] = {}

    def inject_and_watch() -> None:
        inject()
        t0 = time.monotonic()
        slowest = 0.0
        while takeover_by and time.monotonic() - t0 < limit:
            asked = time.monotonic()
            answer = matrix.vantage.holder(matrix.vip)
            slowest = max(slowest, time.monotonic() - asked)
            # The takeover happened before this query ended, at most one query's time earlier:
            # the resolution is the slowest query seen (ssh + python at the vantage point; ~0.2 s on
            # containers, ~1 s on emulated VMs), not a fixed guess.
            takeover["resolution_ms"] = max(POLL_RESOLUTION_MS, round(slowest * 1000, 1))
            if answer == takeover_by:
                takeover["ms"] = round((time.monotonic() - t0) * 1000, 1)
                break

    result = matrix.vantage.probe(matrix.vip, inject_and_watch, target=matrix.target, max_seconds=limit,
                                  quiet=quiet, min_seconds=min_seconds)
    result["takeover_ms"] = takeover.get("ms")
    result["takeover_resolution_ms"] = takeover.get("resolution_ms", POLL_RESOLUTION_MS)
    gap = result.get("gap_ms")
    if takeover_by:
        record_property("takeover_ms", "none" if takeover.get("ms") is None else takeover["ms"])
    for key, value in {"failover_case": case, "budget_ms": budget.ms, "budget_formula": budget.formula,
                       "gap_ms": "unrecovered" if gap is None else gap, "outages": result.get("outages"),
                       "total_outage_ms": result.get("total_outage_ms"), "holder_before": holder,
                       "prober_stall_in_outage_ms": result.get("prober_stall_in_outage_ms", 0),
                       "vantage": matrix.vantage.name, "vantage_reason": matrix.vantage.why,
                       "margin_ms": round(matrix.margin_s * 1000),
                       "target": matrix.target.label}.items():
        record_property(key, value)
    return result, budget


def _judge(case: str, fault: str, result: dict, budget: Budget, matrix: Matrix, holder: str,
           untracked_hint: str = "") -> None:
    gap = result.get("gap_ms")
    if gap is None or not result.get("recovered"):
        state = holder_state(matrix.lbs, matrix.vantage, matrix.vip)
        hint = untracked_hint if state.answering in (holder, None) and untracked_hint else ""
        pytest.fail(f"{case}: {hint + ' ' if hint else ''}After {fault} on {holder} the VIP "
                    f"{matrix.vip}:{matrix.target.port} did not answer again (budget {budget.ms:.0f} ms = "
                    f"{budget.formula}); {state.describe()}.")
    stalled = result.get("prober_stall_in_outage_ms") or 0
    assert gap <= budget.ms, (f"{case}: {fault} on {holder} cost a {gap:.0f} ms gap, over the budget of "
                              f"{budget.ms:.0f} ms ({budget.formula})"
                              + (f"; the prober at {matrix.vantage.name} was itself not scheduled for {stalled:.0f} ms "
                                 "of it (a loaded vantage point)" if stalled else ""))


def _expect_new_holder(record_property, matrix: Matrix, case: str, holder: str) -> str:
    state = wait_single_holder(matrix.lbs, matrix.vantage, matrix.vip, matrix.deadline_s)
    answering = state.answering
    record_property("holder_after", answering or "nobody")
    assert answering and answering != holder, (f"{case}: the VIP should have moved away from {holder}; "
                                               f"{state.describe()}")
    return answering


def test_failover_a_keepalived_stopped(matrix, record_property):
    holder = matrix.settle(matrix.placement_after_restore(), "before (a)")
    backup = matrix.ranked(exclude=holder)[0].name
    lb = matrix.by_name(holder)
    try:
        result, budget = _measure(record_property, matrix, "keepalived_stopped", holder, backup,
                                  lambda: _root(lb, "systemctl stop keepalived", "systemctl stop keepalived"),
                                  takeover_by=backup)
        _expect_new_holder(record_property, matrix, "keepalived_stopped", holder)
        _judge("keepalived_stopped", "a graceful keepalived stop", result, budget, matrix, holder)
    finally:
        _root(lb, "systemctl start keepalived", "restarting keepalived")
    matrix.settle(matrix.placement_after_restore(), "after restoring (a)")


def test_failover_b_haproxy_killed(matrix, record_property):
    holder = matrix.settle(matrix.placement_after_restore(), "before (b)")
    backup = matrix.ranked(exclude=holder)[0].name
    lb = matrix.by_name(holder)
    _root(lb, f"mkdir -p {DROPIN_DIR} && printf '[Service]\\nRestart=no\\n' > {DROPIN} && systemctl daemon-reload",
          "holding off HAProxy's automatic restart")
    try:
        result, budget = _measure(record_property, matrix, "haproxy_killed", holder, backup,
                                  lambda: _root(lb, kill_group("haproxy"), "killing HAProxy"),
                                  max_seconds=max(8.0, matrix.budget("haproxy_killed", backup).ms / 1000 * 3),
                                  takeover_by=backup)
        hint = (f"The VIP stayed on {holder} while its HAProxy was dead: keepalived does not track HAProxy "
                f"there (no working vrrp_script/track_script), so clients lose the API until someone restarts it.")
        _judge("haproxy_killed", "killing HAProxy", result, budget, matrix, holder, untracked_hint=hint)
        _expect_new_holder(record_property, matrix, "haproxy_killed", holder)
    finally:
        _root(lb, f"rm -f {DROPIN} && systemctl daemon-reload && systemctl reset-failed haproxy; "
                  "systemctl start haproxy", "restarting HAProxy")
    matrix.settle(matrix.placement_after_restore(), "after restoring (b)")


def test_failover_c_keepalived_crashed(matrix, record_property):
    holder = matrix.settle(matrix.placement_after_restore(), "before (c)")
    backup = matrix.ranked(exclude=holder)[0].name
    lb = matrix.by_name(holder)
    try:
        result, budget = _measure(record_property, matrix, "keepalived_crashed", holder, backup,
                                  lambda: _root(lb, kill_group("keepalived"),
                                                "SIGKILL of keepalived's process group"),
                                  takeover_by=backup, quiet=matrix.budget("keepalived_crashed", backup).ms / 1000 + 1)
        left = lb.root("pgrep -x keepalived || true").stdout.split()
        assert not left, f"keepalived processes on {holder} survived SIGKILL of the group: {left}"
        _judge("keepalived_crashed", "a keepalived crash (SIGKILL of the whole group)", result, budget, matrix,
               holder)
        took, resolution = result["takeover_ms"], result["takeover_resolution_ms"]
        assert took is not None and took <= budget.ms + resolution, (
            f"keepalived_crashed: {backup} took over {'after ' + format(took, '.0f') + ' ms' if took else 'never'}"
            f", over the budget of {budget.ms:.0f} ms ({budget.formula}) + {resolution:.0f} ms poll resolution "
            "(the slowest holder query measured)")
        state = holder_state(matrix.lbs, matrix.vantage, matrix.vip)
        record_property("holder_after", state.answering or "nobody")
        assert state.answering == backup, (f"keepalived_crashed: {backup} should answer for the VIP; "
                                           f"{state.describe()}")
    finally:
        _root(lb, "systemctl reset-failed keepalived; systemctl start keepalived", "restarting keepalived")
    matrix.settle(matrix.placement_after_restore(), "after restoring (c)")


def _wait_ssh(lb: ClusterHost, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if lb.run("ip -o link show up").rc == 0:
                return True
        except RuntimeError:
            pass
        time.sleep(0.3)
    return False


def test_failover_d_link_cut_without_split_brain(matrix, record_property):
    holder = matrix.settle(matrix.placement_after_restore(), "before (d)")
    backup = matrix.ranked(exclude=holder)[0].name
    lb = matrix.by_name(holder)
    nic = lb.nic()
    assert nic, f"no interface on {holder} carries {lb.ip}"
    budget = matrix.budget("link_cut", backup)
    cut_s = round(budget.ms / 1000 + 1.5, 1)
    record_property("link_cut_s", cut_s)
    # The link comes back by itself (a transient unit), since SSH to the node dies with it. The
    # default route goes with the link and is put back. The first sleep lets this SSH reply out.
    script = (f"sleep 0.3; r=$(ip -4 route show default dev {nic}); ip link set dev {nic} down; sleep {cut_s}; "
              f"ip link set dev {nic} up; if [ -n \"$r\" ]; then ip route replace $r; fi")
    unit = f"kubitect-linkcut-{secrets.token_hex(3)}"
    started = time.monotonic()
    result, budget = _measure(
        record_property, matrix, "link_cut", holder, backup,
        lambda: _root(lb, f"systemd-run --quiet --collect --unit={unit} sh -c '{script}'", "cutting the link"),
        # The cut starts after a delay: watch at least the budget's length (the cut lasts 1.5 s longer).
        max_seconds=cut_s + 1, min_seconds=budget.ms / 1000)
    answering = matrix.vantage.holder(matrix.vip)
    record_property("holder_after", answering or "nobody")
    time.sleep(max(0.0, cut_s + 0.5 - (time.monotonic() - started)))
    assert _wait_ssh(lb, 20), f"{holder} did not come back on the network after its link was restored"
    _judge("link_cut", f"cutting {nic}", result, budget, matrix, holder)
    assert answering == backup, f"link_cut: {backup} should answer for the VIP while {holder} is cut off; " \
                                f"answering: {answering or 'nobody'}"
    final = matrix.settle(matrix.placement_after_restore(), "after the link came back")
    # Split brain: once settled, never two holders (by address or by a different answer).
    seen = []
    until = time.monotonic() + 3 * float(matrix.settings.advert_int) + 1.0
    while time.monotonic() < until:
        seen.append((address_holders(matrix.lbs, matrix.vip), matrix.vantage.holder(matrix.vip)))
    record_property("split_brain_samples", len(seen))
    bad = [s for s in seen if len(s[0]) != 1 or s[1] != final]
    assert not bad, (f"split brain after the link came back: {len(bad)} of {len(seen)} samples show holders "
                     f"{bad[0][0]} answering {bad[0][1]} (settled holder was {final})")


def test_failover_e_old_holder_back(matrix, record_property):
    holder = matrix.settle(matrix.placement_after_restore(), "before (e)")
    lb = matrix.by_name(holder)
    _root(lb, "systemctl stop keepalived", "stopping keepalived")
    try:
        backup = matrix.settle(None, f"(e) after stopping keepalived on {holder}")
        expected = holder if (matrix.settings.preempt and matrix.priority(lb) > matrix.priority(
            matrix.by_name(backup))) else backup
        record_property("preempt", str(matrix.settings.preempt).lower())
        record_property("expected_holder", expected)
        result, budget = _measure(record_property, matrix, "holder_back", backup, backup,
                                  lambda: _root(lb, "systemctl start keepalived", "starting keepalived"),
                                  max_seconds=matrix.deadline_s + 2, quiet=matrix.deadline_s)
    except BaseException:
        lb.root("systemctl start keepalived")
        raise
    state = wait_single_holder(matrix.lbs, matrix.vantage, matrix.vip, matrix.deadline_s, expected)
    record_property("holder_after", state.answering or "nobody")
    mode = "preempt" if matrix.settings.preempt else "nopreempt"
    assert state.single == expected, (f"holder_back ({mode}): the VIP should be on {expected} after {holder} "
                                      f"returned; {state.describe()}")
    _judge("holder_back", f"{holder} returning ({mode})", result, budget, matrix, backup)
