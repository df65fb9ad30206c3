"""The failover budgets this implementation declares: the gap each fault may cost, from its timers.

The generic conformance suite measures a fault's gap and holds it to the budget the load
balancer declares; it knows no VRRP. This module is where the numbers come from (peers-and-
failover.md 5.1), and `declared()` is what apply records as `ctx.record["failover"]`, so the
suite and this plugin's own failover module read one source:

- keepalived stopped: the holder sends a priority-0 advert; the backup waits only its skew.
- HAProxy killed: the check notices within interval x fall (or the exit event within
  EXIT_NOTICE_S); the holder goes FAULT and sends priority 0, the backup waits its skew.
- keepalived crashed / link cut / host lost: the backup hears nothing for
  Master_Down_Interval = 3 x advert + skew.
- holder back: one advert (a returning higher-priority instance preempts on its first advert).

With the VIP on the masters (control-plane-vip) a holder that goes away is also an API server
that goes away: the new holder's HAProxy still sends new connections to it until its health
check marks it down, so the holder-gone cases add that (`backend_down_s`), and the case the
masters add, the holder's API server stopped, costs only that.

Budgets are timer arithmetic without a margin; the suite adds its stated margin (scheduling,
ARP, the prober's cadence) to every one.
"""

from __future__ import annotations

from typing import Any

# HAProxy's exit reaches keepalived as an event (trackHaproxyExit): systemd notices the exit, runs
# the hook, keepalived reads the file; measured 20-60 ms on nspawn nodes, budgeted at this.
EXIT_NOTICE_S = 0.1
# haproxy.cfg.j2's API backend checks: `inter 1s fastinter 500ms fall 2`, and a check connect
# gives up after min(timeout connect, inter) = 1 s. A backend that stops answering is marked down
# after its next check fails (<= inter + connect timeout) and one more at fastinter (+ connect
# timeout); a refused connection (API server stopped, host up) fails at once.
CHECK_INTER_S, CHECK_FASTINTER_S, CHECK_FALL, CHECK_CONNECT_S = 1.0, 0.5, 2, 1.0


def skew_s(advert_int: float, priority: int, vrrp_version: int) -> float:
    """RFC 3768/5798 skew: VRRPv2 (256-p)/256 s, VRRPv3 (256-p)*advert/256."""
    base = advert_int if vrrp_version == 3 else 1.0
    return (256 - priority) * base / 256


def exit_events_tracked(settings: Any, override: bool | None = None) -> bool:
    """Whether HAProxy's exit reaches keepalived as an event (not only by the periodic check)."""
    return bool(getattr(settings, "track_haproxy_exit", False)) if override is None else override


def backend_down_s(silent: bool) -> float:
    """How long the other masters' HAProxy keeps sending new connections to a master that is gone.

    `silent`: the master's packets vanish (link cut, host lost): each failing check waits out its
    connect timeout. Otherwise (API server stopped) the connection is refused at once.
    """
    wait = CHECK_CONNECT_S if silent else 0.0
    return CHECK_INTER_S + wait + (CHECK_FALL - 1) * (CHECK_FASTINTER_S + wait)


def expected_budget(settings: Any, *, backup_priority: int = 10, margin_s: float = 0.0,
                    exit_events: bool | None = None, holder_is_backend: bool = False) -> dict[str, float]:
    """Budget in ms per fault on the holder: timer arithmetic plus `margin_s`.

    `settings` is anything with advert_int, check_interval, check_fall (and optionally
    vrrp_version, track_haproxy_exit): `VrrpSettings`. The backup's priority sets the skew (pass
    the priority keepalived really runs with; 10, the original's default, gives the largest skew).
    `holder_is_backend`: the load balancers are the masters (control-plane-vip).
    """
    return {case: b["ms"] + round(margin_s * 1000, 1) for case, b in
            _budgets(settings, backup_priority, exit_events, holder_is_backend).items()}


def _budgets(settings: Any, backup_priority: int, exit_events: bool | None,
             holder_is_backend: bool) -> dict[str, dict[str, Any]]:
    advert = float(settings.advert_int)
    version = int(getattr(settings, "vrrp_version", 2 if advert.is_integer() else 3))
    skew = skew_s(advert, backup_priority, version)
    down = 3 * advert + skew
    down_text = f"3 × {advert:g} advert + {skew:.2f} skew"
    if exit_events_tracked(settings, exit_events):
        noticed, noticed_text = EXIT_NOTICE_S, f"{EXIT_NOTICE_S:g} exit event"
        check = float(settings.check_interval) * int(settings.check_fall)
        if check < noticed:
            noticed, noticed_text = check, f"{settings.check_interval} check interval × {settings.check_fall} fall"
    else:
        noticed = float(settings.check_interval) * int(settings.check_fall)
        noticed_text = f"{settings.check_interval} check interval × {settings.check_fall} fall"
    cases = {
        "keepalived_stopped": (skew, f"{skew:.2f} skew"),
        "haproxy_killed": (noticed + skew, f"{noticed_text} + {skew:.2f} skew"),
        "keepalived_crashed": (down, down_text),
        "link_cut": (down, down_text),
        "host_loss": (down, down_text),
        "holder_back": (advert, f"{advert:g} advert"),
    }
    if holder_is_backend:
        gone = backend_down_s(silent=True)
        gone_text = f"HAProxy marks the lost master down ({backend_down_s(True):g} s)"
        for case in ("link_cut", "host_loss"):
            cases[case] = (max(down, gone), f"max({down_text}, {gone_text})")
        refused = backend_down_s(silent=False)
        cases["apiserver_stopped"] = (refused, f"HAProxy marks the stopped API server down ({refused:g} s: "
                                               f"{CHECK_INTER_S:g} inter + {CHECK_FALL - 1} × "
                                               f"{CHECK_FASTINTER_S:g} fastinter)")
    return {case: {"ms": round(s * 1000, 1), "formula": text} for case, (s, text) in cases.items()}


def takeover_deadline_s(settings: Any, backup_priority: int) -> float:
    """How long a settled placement may take after a change: checks must rise, then an election."""
    advert = float(settings.advert_int)
    version = int(getattr(settings, "vrrp_version", 2 if advert.is_integer() else 3))
    return (settings.check_rise * settings.check_interval + 3 * advert
            + skew_s(advert, backup_priority, version) + 3.0)


def declared(settings: Any, priorities: dict[str, int], *, holder_is_backend: bool,
             exit_events: bool | None = None) -> dict[str, Any]:
    """What apply records as `ctx.record["failover"]`: per case the budget (ms, without margin)
    and its arithmetic, computed for the lowest-priority backup (the largest skew), how long a
    placement may take to settle, and whether a returning holder takes the VIP back."""
    lowest = min(priorities.values()) if priorities else 10
    return {"budgets": _budgets(settings, lowest, exit_events, holder_is_backend),
            "settle_s": round(takeover_deadline_s(settings, lowest), 2),
            "preempt": bool(settings.preempt),
            "split_brain_watch_s": round(3 * float(settings.advert_int) + 1.0, 2)}
