"""`kubitect status`: what the cluster looks like right now, without running verify.

Each node is asked over SSH (the cluster key, its pinned host key; a node without a pin is not
contacted, since a read command must never trust a key on first use): is it reachable, and for a
load balancer, does it hold the VIP now. Kubernetes node readiness comes from kubectl on the first
reachable master (when the kubernetes stage ever completed); the last verify result and its age
from the record and the saved report. Every probe is bounded, so a dead node costs one timeout,
not a hang, and all nodes are asked at once.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from kubitect_core.access import ClusterAccess
from kubitect_core.state import read_state_json

PROBE_TIMEOUT = 5.0
KUBECTL_TIMEOUT = 20.0


async def _probe(access: ClusterAccess, node, vip: str | None, timeout: float) -> tuple[dict[str, Any], Any]:
    """The node's row, and its open connection when it answered (the caller closes it)."""
    from kubitect_core import remote

    row: dict[str, Any] = {"name": node.name, "role": node.role, "host": node.host, "address": node.ip,
                           "dhcp": bool(node.dhcp), "state": "reachable", "detail": None}
    if node.role == "lb":
        row["holds_vip"] = None
    if not node.ip:
        row.update(state="no address", detail=node.address)
        return row, None
    if not remote.pinned_keys(access.known_hosts, node.ip):
        row.update(state="not pinned", detail="no host key pinned for it: apply the cluster first")
        return row, None
    try:
        conn = await remote.connect(node.ip, user=access.user, key=access.key, known_hosts=access.known_hosts,
                                    timeout=timeout, name=node.name)
    except remote.HostKeyChanged:
        row.update(state="host key changed", detail="its host key is not the pinned one: not trusted")
        return row, None
    except (TimeoutError, remote.RemoteError, OSError) as exc:
        row.update(state="unreachable", detail=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
        return row, None
    if node.role == "lb" and vip:
        try:
            res = await conn.run("ip -o -4 addr show", check=False, timeout=timeout)
            row["holds_vip"] = f" {vip}/" in res.stdout
        except Exception as exc:  # noqa: BLE001 - a probe failure is part of the status, never a crash
            row["detail"] = f"cannot read its addresses: {exc}"
    return row, conn


def _kubernetes(record: dict[str, Any], rows: list[dict[str, Any]], conns: dict[str, Any]):
    """What to ask Kubernetes, or None when it was never installed."""
    entry = record.get("stages", {}).get("kubernetes") or {}
    if not entry.get("ever_completed") and entry.get("status") != "completed":
        return None
    masters = [r["name"] for r in rows if r["role"] == "master" and r["name"] in conns]
    return entry.get("data") or {}, masters


def node_readiness(nodes_json: str) -> dict[str, str]:
    """`kubectl get nodes -o json` -> {node: Ready | NotReady (reason) | Unknown}."""
    out = {}
    for item in json.loads(nodes_json).get("items", []):
        conds = {c.get("type"): c for c in item.get("status", {}).get("conditions", [])}
        ready = conds.get("Ready") or {}
        status = ready.get("status")
        out[item["metadata"]["name"]] = ("Ready" if status == "True" else "Unknown" if status is None
                                         else f"NotReady ({ready.get('reason') or 'no reason given'})")
    return out


def last_verify(access: ClusterAccess, record: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The last verify's counts, time and age in seconds (from its saved report), or None."""
    data = (record.get("stages", {}).get("verify") or {}).get("data") or {}
    summary = data.get("summary")
    if not summary:
        return None
    result: dict[str, Any] = {k: summary.get(k) for k in ("passed", "failed", "skipped")}
    result.update(time=None, age_seconds=None, status=record["stages"]["verify"].get("status"))
    try:
        report = read_state_json(access.state.reports_dir / "conformance.json") or {}
        when = datetime.fromisoformat(report["time"])
        result.update(time=when.isoformat(), age_seconds=max(0, int((now - when).total_seconds())))
    except (KeyError, TypeError, ValueError, OSError):
        pass
    return result


async def gather(access: ClusterAccess, *, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """The status document (docs/events.md, kind cluster-status)."""
    from kubitect_core.events import EVENTS_VERSION

    topo = access.topology
    record = access.state.load_record()
    probed = await asyncio.gather(*(_probe(access, n, topo.vip, timeout) for n in topo.nodes))
    rows = [row for row, _ in probed]
    conns = {row["name"]: conn for row, conn in probed if conn is not None}
    try:
        kubernetes: dict[str, Any] | None = None
        asked = _kubernetes(record, rows, conns)
        if asked is not None:
            facts, masters = asked
            kubernetes = {"installed": True, "asked": None, "nodes": {}, "error": None}
            if not masters:
                kubernetes["error"] = "no master answered"
            else:
                from kubitect_conformance.k8s import kubectl_command

                kubernetes["asked"] = masters[0]
                try:
                    res = await conns[masters[0]].run(f"{kubectl_command(facts)} get nodes -o json", sudo=True,
                                                      check=False, timeout=KUBECTL_TIMEOUT)
                    if res.exit_status == 0:
                        kubernetes["nodes"] = node_readiness(res.stdout)
                    else:
                        kubernetes["error"] = (res.stderr.strip() or f"kubectl exited with {res.exit_status}")[:500]
                except Exception as exc:  # noqa: BLE001 - reported, never a crash
                    kubernetes["error"] = str(exc)[:500]
            for row in rows:
                if row["role"] != "lb":
                    row["kubernetes"] = kubernetes["nodes"].get(row["name"])
    finally:
        await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)
    holders = [r["name"] for r in rows if r.get("holds_vip")]
    return {"v": EVENTS_VERSION, "kind": "cluster-status", "cluster": access.cluster, "endpoint": topo.endpoint,
            "vip": topo.vip, "vip_holders": holders if topo.vip else None, "nodes": rows,
            "kubernetes": kubernetes, "last_verify": last_verify(access, record, datetime.now(UTC)),
            "stages": {name: e.get("status") for name, e in record.get("stages", {}).items()}}


def age(seconds: int | None) -> str:
    """3 s, 5 min, 2 h, 4 d: how long ago, for people."""
    if seconds is None:
        return "unknown time"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
