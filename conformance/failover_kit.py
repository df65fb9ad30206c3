"""What every failover case needs, whoever implements the VIP: a settled bench, a measured gap,
a verdict against the budget the implementation declared.

The generic suite (`test_failover.py`) runs the faults any VIP must survive with this; a load
balancer plugin runs its own faults (its daemons stopped, killed, crashed) with the same kit,
from a module it contributes (`kubitect_conformance_modules`), reaching it through
`kubitect_core.sdk.conformance`. Budgets are the implementation's (`failover.budgets` in what its
apply recorded) plus the suite's stated margin; nothing here knows VRRP.

A case, in the kit's words:

    holder = bench.settle(None, "before (x)")             # one holder, answering
    result, budget = measure(record_property, bench, "x", holder, inject, takeover_by=None)
    judge("x", "what was done", result, budget, bench, holder)
    bench.settle(None, "after restoring (x)")

Gaps, budgets and holders are recorded as JUnit properties, which the verify stage turns into
the report's failover table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from .cluster import ClusterHost
from .vip import Budget, Target, Vantage, address_holders, declared_budget, holder_state, wait_single_holder

POLL_RESOLUTION_MS = 300  # floor of the takeover-time resolution; the real one is measured per case
DEFAULT_SETTLE_S = 10.0  # when the implementation declares no settle time


def kill_group(unit: str) -> str:
    """Shell: SIGKILL the whole process group of a unit's main process (parent and children at once).

    Not `systemctl kill`: inside containers it can fail to signal a unit's other processes, and a
    surviving child makes the next start exit at once ("already running").
    """
    return (f"pid=$(systemctl show -p MainPID --value {unit}); pg=$(ps -o pgid= -p \"$pid\" | tr -d ' '); "
            f"[ -n \"$pg\" ] && [ \"$pg\" -gt 1 ] && kill -9 -\"$pg\"")


@dataclass
class Bench:
    """The nodes that may hold the VIP, where clients probe from, and what the implementation declared."""

    holders: list[ClusterHost]
    vantage: Vantage
    vip: str
    declared: dict[str, Any]
    margin_s: float
    target: Target

    def by_name(self, name: str) -> ClusterHost:
        return next(h for h in self.holders if h.name == name)

    def budget(self, case: str) -> Budget | None:
        """The declared budget of `case` plus the margin; None when the implementation declares none."""
        return declared_budget(self.declared, case, self.margin_s)

    @property
    def settle_s(self) -> float:
        """How long a placement may take to settle after a change (declared, else 10 s)."""
        return float(self.declared.get("settle_s") or DEFAULT_SETTLE_S)

    def settle(self, expected: str | None = None, what: str = "") -> str:
        """Waits for a single answering holder (the expected one, if given); fails naming the state."""
        state = wait_single_holder(self.holders, self.vantage, self.vip, self.settle_s, expected)
        if not state.single or (expected and state.single != expected):
            want = f"{expected} as the only VIP holder" if expected else "exactly one VIP holder"
            pytest.fail(f"{what}: expected {want} within {self.settle_s:.1f} s; now {state.describe()}")
        return state.single

    def others(self, holder: str) -> list[ClusterHost]:
        return [h for h in self.holders if h.name != holder]


def root(host: ClusterHost, command: str, what: str) -> None:
    """Runs `command` as root on `host`; a failure fails the case, naming `what`."""
    res = host.root(command)
    assert res.rc == 0, f"{what} on {host.name} failed: {(res.stderr or res.stdout).strip()[-400:]}"


def measure(record_property: Callable, bench: Bench, case: str, holder: str, inject: Callable[[], None], *,
            max_seconds: float | None = None, quiet: float | None = None, takeover_by: str | None = None,
            min_seconds: float = 0.0) -> tuple[dict, Budget]:
    """Runs the prober around `inject`; with `takeover_by`, also times how long until that node answers.

    The takeover time is polled from this process while the prober runs at the vantage point
    (resolution: one holder query); it shows when the backup really took over, which a crash
    that leaves the old holder serving hides from the gap.
    """
    budget = bench.budget(case)
    if budget is None:
        pytest.skip(f"the load balancer implementation declares no failover budget for {case}")
    limit = max_seconds or max(6.0, budget.ms / 1000 * 3)
    takeover: dict[str, float] = {}

    def inject_and_watch() -> None:
        inject()
        t0 = time.monotonic()
        slowest = 0.0
        while takeover_by and time.monotonic() - t0 < limit:
            asked = time.monotonic()
            answer = bench.vantage.holder(bench.vip)
            slowest = max(slowest, time.monotonic() - asked)
            # The takeover happened before this query ended, at most one query's time earlier.
            takeover["resolution_ms"] = max(POLL_RESOLUTION_MS, round(slowest * 1000, 1))
            if answer == takeover_by:
                takeover["ms"] = round((time.monotonic() - t0) * 1000, 1)
                break

    result = bench.vantage.probe(bench.vip, inject_and_watch, target=bench.target, max_seconds=limit,
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
                       "vantage": bench.vantage.name, "vantage_reason": bench.vantage.why,
                       "margin_ms": round(bench.margin_s * 1000), "target": bench.target.label}.items():
        record_property(key, value)
    return result, budget


def judge(case: str, fault: str, result: dict, budget: Budget, bench: Bench, holder: str,
          untracked_hint: str = "") -> None:
    """Fails the case when the endpoint never answered again, or when the gap exceeds the budget."""
    gap = result.get("gap_ms")
    if gap is None or not result.get("recovered"):
        state = holder_state(bench.holders, bench.vantage, bench.vip)
        hint = untracked_hint if state.answering in (holder, None) and untracked_hint else ""
        pytest.fail(f"{case}: {hint + ' ' if hint else ''}After {fault} on {holder} the VIP "
                    f"{bench.vip}:{bench.target.port} did not answer again (budget {budget.ms:.0f} ms = "
                    f"{budget.formula}); {state.describe()}.")
    stalled = result.get("prober_stall_in_outage_ms") or 0
    assert gap <= budget.ms, (f"{case}: {fault} on {holder} cost a {gap:.0f} ms gap, over the budget of "
                              f"{budget.ms:.0f} ms ({budget.formula})"
                              + (f"; the prober at {bench.vantage.name} was itself not scheduled for {stalled:.0f} ms "
                                 "of it (a loaded vantage point)" if stalled else ""))


def expect_new_holder(record_property: Callable, bench: Bench, case: str, holder: str) -> str:
    """The VIP settled on another node than `holder`; returns it."""
    state = wait_single_holder(bench.holders, bench.vantage, bench.vip, bench.settle_s)
    answering = state.answering
    record_property("holder_after", answering or "nobody")
    assert answering and answering != holder, (f"{case}: the VIP should have moved away from {holder}; "
                                               f"{state.describe()}")
    return answering


def wait_ssh(host: ClusterHost, timeout: float) -> bool:
    """True once `host` answers over SSH again (after its link came back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if host.run("ip -o link show up").rc == 0:
                return True
        except RuntimeError:
            pass
        time.sleep(0.3)
    return False


def assert_no_split_brain(record_property: Callable, bench: Bench, case: str, final: str) -> None:
    """Once settled, never two holders, by address or by a different answer, for the declared watch."""
    seen = []
    until = time.monotonic() + float(bench.declared.get("split_brain_watch_s") or 2.0)
    while time.monotonic() < until:
        state = holder_state(bench.holders, bench.vantage, bench.vip)
        seen.append((address_holders(bench.holders, bench.vip), state.answering))
    record_property("split_brain_samples", len(seen))
    bad = [s for s in seen if len(s[0]) != 1 or s[1] != final]
    assert not bad, (f"{case}: split brain: {len(bad)} of {len(seen)} samples show holders "
                     f"{bad[0][0]} answering {bad[0][1]} (settled holder was {final})")
