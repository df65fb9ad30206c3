"""A fingerprint of the root network namespace, to prove that labs never change it.

Compared before and after a test session: links, addresses, routes, policy rules, nftables and
iptables rules, and the forwarding/nonlocal-bind sysctls. Volatile details (counters, link
state, timestamps, neighbour entries) are left out so that only real changes show.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from kubitect_core.lab.netns import in_root_netns, root_netns_path

SYSCTLS = (
    "net/ipv4/ip_forward", "net/ipv4/ip_nonlocal_bind", "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
)


_target: str | None = None  # None: the root namespace; else a namespace path to inspect


def _enter(argv: list[str]) -> list[str]:
    if _target is not None:
        return ["nsenter", f"--net={_target}", "--", *argv]
    if not in_root_netns():
        return ["nsenter", f"--net={root_netns_path()}", "--", *argv]
    return argv


def _out(argv: list[str]) -> str:
    try:
        proc = subprocess.run(_enter(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"<{argv[0]} unavailable: {exc}>"
    if proc.returncode != 0:
        return f"<{' '.join(argv)} failed: {proc.stderr.strip()[:200]}>"
    return proc.stdout


def _json(argv: list[str]) -> list[dict[str, Any]]:
    text = _out(argv)
    try:
        return json.loads(text) if text.strip() else []
    except ValueError:
        return [{"error": text[:200]}]


def _links() -> list[str]:
    out = []
    for link in _json(["ip", "-j", "-d", "link", "show"]):
        kind = (link.get("linkinfo") or {}).get("info_kind", "")
        out.append(
            f"{link.get('ifname')} kind={kind} master={link.get('master', '')} "
            f"mtu={link.get('mtu')} addr={link.get('address', '')} "
            f"up={'UP' in link.get('flags', [])}"
        )
    return sorted(out)


def _addresses() -> list[str]:
    out = []
    for link in _json(["ip", "-j", "addr", "show"]):
        for a in link.get("addr_info", []):
            out.append(f"{link.get('ifname')} {a.get('family')} {a.get('local')}/{a.get('prefixlen')}")
    return sorted(out)


def _routes() -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        for r in _json(["ip", "-j", fam, "route", "show", "table", "all"]):
            r = {k: v for k, v in r.items() if k not in ("expires", "flags", "pref")}
            out.append(json.dumps(r, sort_keys=True))
    return sorted(out)


def _rules() -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in _json(["ip", "-j", "rule", "show"]))


def _strip_counters(text: str) -> list[str]:
    lines = []
    for ln in text.splitlines():
        if ln.startswith("#"):
            continue
        ln = re.sub(r"\[\d+:\d+\]", "", ln)
        ln = re.sub(r"counter packets \d+ bytes \d+", "counter", ln)
        lines.append(ln.rstrip())
    return lines


def _sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:  # read from a process inside the namespace: /proc/sys is per netns
        out[key] = _out(["sh", "-c", f"cat /proc/sys/{key} 2>/dev/null || echo absent"]).strip()
    return out


def snapshot_netns(path: str) -> dict[str, Any]:
    """The same fingerprint for any namespace (e.g. `/run/netns/NAME`); used to test the detector."""
    global _target
    saved, _target = _target, path
    try:
        return snapshot_root_netns()
    finally:
        _target = saved


def snapshot_root_netns() -> dict[str, Any]:
    """What the root network namespace looks like now (links, addresses, routes, firewall).

    Why: the lab rules forbid changing the root namespace; asserting equality of two snapshots
    (session start vs. end) turns that rule into a test. Works from inside a lab namespace too
    (it reads PID 1's namespace through nsenter).
    """
    return {
        "links": _links(),
        "addresses": _addresses(),
        "routes": _routes(),
        "rules": _rules(),
        "nftables": _strip_counters(_out(["nft", "list", "ruleset"])),
        "iptables": _strip_counters(_out(["iptables-save"])),
        "ip6tables": _strip_counters(_out(["ip6tables-save"])),
        "sysctls": _sysctls(),
    }


def diff_snapshots(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots (empty when the namespace is unchanged)."""
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            out += [f"{key}: - {x}" for x in a if x not in b]
            out += [f"{key}: + {x}" for x in b if x not in a]
            if not any(line.startswith(f"{key}:") for line in out):
                out.append(f"{key}: order or duplicates changed")
        else:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out
