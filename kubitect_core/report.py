"""Plain-text tables of a conformance report (checks, then the measured failover matrix).

Plain text on purpose: the same lines go to the terminal (through stage progress), to logs and
into JSON events, and square brackets in pytest ids must not be eaten by a markup renderer.
"""

from __future__ import annotations

import re
from typing import Any

OUTCOME_WORD = {"passed": "ok", "failed": "FAILED", "skipped": "skipped"}


def display_name(name: str) -> str:
    """`test_x[lb-1]` -> `test_x (lb-1)`: readable, and safe for markup-aware consoles."""
    m = re.fullmatch(r"(.*)\[(.*)\]", name or "")
    return f"{m.group(1)} ({m.group(2)})" if m else (name or "")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def _short(text: str, limit: int = 60) -> str:
    text = " ".join((text or "").split()).replace("[", "(").replace("]", ")")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def checks_table(report: dict[str, Any]) -> list[str]:
    """One row per check: name, result, seconds, and the reason for a failure or skip."""
    rows = []
    for c in report.get("cases", []):
        if c.get("properties", {}).get("failover_case"):
            continue
        why = _short(c.get("message", "")) if c["outcome"] != "passed" else ""
        rows.append([display_name(c["name"]), OUTCOME_WORD.get(c["outcome"], c["outcome"]),
                     f"{c.get('seconds', 0):.1f}s", why])
    return _table(["check", "result", "time", "detail"], rows)


def nodes_table(report: dict[str, Any]) -> list[str]:
    """One row per node checked: name, role, the address it was reached at and where that came from."""
    rows = [[n.get("name") or "?", n.get("role") or "?", n.get("ip") or "-",
             "DHCP lease" if n.get("address") == "dhcp" else "config", n.get("host") or "-"]
            for n in report.get("nodes") or []]
    return _table(["node", "role", "address", "from", "host"], rows)


def failover_table(report: dict[str, Any]) -> list[str]:
    """One row per failover case: case, budget (ms), measured gap (ms), result, holders."""
    rows = []
    for f in report.get("failover", []):
        gap = f.get("gap_ms")
        gap_text = "-" if gap is None and f["result"] == "skipped" else \
            "no recovery" if gap is None else f"{gap:.0f}"
        budget = f.get("budget_ms")
        holders = f"{f.get('holder_before') or '?'} -> {f.get('holder_after') or '?'}"
        took = f.get("takeover_ms")
        case = f["case"] + (f" ({f['host_fault']}: {f.get('lost_host')})" if f.get("host_fault") else "")
        rows.append([case, "-" if budget is None else f"{budget:.0f}", gap_text,
                     "-" if took is None else f"{took:.0f}", OUTCOME_WORD.get(f["result"], f["result"]), holders])
    return _table(["failover case", "budget ms", "gap ms", "takeover ms", "result", "VIP holder"], rows)


def render_text(report: dict[str, Any]) -> str:
    """The whole report as the terminal shows it after `kubitect verify`."""
    lines = [f"Conformance of cluster '{report.get('cluster')}': {report.get('passed', 0)} passed, "
             f"{report.get('failed', 0)} failed, {report.get('skipped', 0)} skipped", ""]
    if report.get("nodes"):
        lines += nodes_table(report) + [""]
    lines += checks_table(report)
    if report.get("failover"):
        fo = report["failover"]
        vantage = next((f.get("vantage") for f in fo if f.get("vantage")), None)
        reason = next((f.get("vantage_reason") for f in fo if f.get("vantage_reason")), None)
        if vantage and reason:
            vantage = f"{vantage}, {reason}"
        margin = next((f.get("margin_ms") for f in fo if f.get("margin_ms") is not None), None)
        target = next((f.get("target") for f in fo if f.get("target")), "TLS GET /readyz through the VIP")
        lines += ["", f"VIP failover (gap = first failed to first successful request; probe: {target}"
                  + (f"; from {vantage}" if vantage else "")
                  + (f"; budgets = configured timers + {margin:.0f} ms margin" if margin is not None else "") + ")"]
        lines += failover_table(report)
    return "\n".join(lines)
