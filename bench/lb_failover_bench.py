"""advertInt sweep for the keepalived-haproxy plugin in the namespace lab (root only, cheap).

Runs every fault case several times for a few advert intervals and prints min / median / max of
the gap a client sees through VIP:6443, next to the budget `expected_budget()` derives from the
timers. The lab has no systemd and no process events, so HAProxy's death is seen by the health
check only, and every other key is the standard profile's (preempt: the VIP returns to lb1
between runs). The side-by-side comparison with Kubitect's settings on real nodes is
failover_side_by_side.py; this one only shows how the timers scale:

    sudo .venv/bin/python bench/lb_failover_bench.py --runs 5 --advert 1 0.5 0.2 0.1 0.05
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "lab"))

from kubitect_plugins.keepalived_haproxy.budgets import expected_budget  # noqa: E402
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings  # noqa: E402
from lb_lab import LbLab  # noqa: E402

from kubitect_core.failover import DEFAULT_MARGIN_S, summary  # noqa: E402

CASES = {
    "keepalived_stopped": (LbLab.stop_keepalived, LbLab.start_keepalived),
    "haproxy_killed": (LbLab.kill_haproxy, LbLab.start_haproxy),
    "keepalived_crashed": (LbLab.crash_keepalived, LbLab.start_keepalived),
    "link_cut": (LbLab.cut_link, LbLab.restore_link),
}


def bench(advert: float, runs: int) -> dict[str, dict]:
    """All cases `runs` times with one advert interval; the lab is built once per interval."""
    settings = VrrpSettings(profile="standard", advert_int=advert, track_haproxy_exit=False)
    budgets = expected_budget(settings, backup_priority=100, margin_s=DEFAULT_MARGIN_S)
    lab = LbLab(vrrp=settings)
    out: dict[str, dict] = {}
    try:
        lab.up()
        lab.wait_holder("lb1", 20)
        for case, (inject, restore) in CASES.items():
            gaps, flaps = [], 0
            for _ in range(runs):
                res = lab.measure(lambda inject=inject: inject(lab, "lb1"), quiet=budgets[case] / 1000 + 1)
                restore(lab, "lb1")
                lab.wait_holder("lb1", 20)
                gaps.append(res["gap_ms"] if res["recovered"] else float("inf"))
                flaps += res["outages"] > 1
            out[case] = {**summary(gaps), "budget_ms": budgets[case], "flapped": flaps}
            print(f"advert {advert}: {case}: {out[case]}", flush=True)
    finally:
        lab.down()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--advert", type=float, nargs="+", default=[1.0, 0.5, 0.2])
    args = parser.parse_args()
    results = {str(a): bench(a, args.runs) for a in args.advert}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
