"""Reading Ceph's state: pure judges (JSON in, verdict out), shared by apply and conformance."""

from __future__ import annotations

import json
from typing import Any


def cluster_state(cephcluster_json: str) -> tuple[bool, str]:
    """(healthy, what it waits for) from `kubectl get cephcluster -o json`.

    Healthy is Ceph's own HEALTH_OK as the operator reports it; otherwise the text names the phase,
    the operator's message and Ceph's health checks, so a user sees why apply still waits.
    """
    doc = json.loads(cephcluster_json or "{}")
    status = doc.get("status") or {}
    ceph = status.get("ceph") or {}
    health = ceph.get("health")
    if health == "HEALTH_OK":
        return True, "HEALTH_OK"
    parts = [f"phase {status.get('phase') or 'not reported yet'}"]
    if status.get("message"):
        parts.append(str(status["message"]))
    parts.append(f"health {health or 'not reported yet'}")
    details = ceph.get("details") or {}
    parts += [f"{k}: {v.get('message', '')}".strip() for k, v in sorted(details.items()) if isinstance(v, dict)]
    return False, "; ".join(parts)


def osd_problems(metadata_json: str, dump_json: str, wanted: dict[str, list[str]]) -> list[str]:
    """Configured disks that are not an up and in OSD.

    `wanted` maps node name -> the kernel names of its data disks (vdb, ...) as the node resolved
    their by-id paths; `ceph osd metadata` names each OSD's hostname and devices, `ceph osd dump`
    its up/in flags.
    """
    meta = json.loads(metadata_json or "[]")
    flags = {o.get("osd"): o for o in json.loads(dump_json or "{}").get("osds", [])}
    found: dict[tuple[str, str], Any] = {}
    for osd in meta:
        for dev in str(osd.get("devices") or "").split(","):
            if dev:
                found[(osd.get("hostname"), dev)] = osd.get("id")
    problems = []
    for node, devices in sorted(wanted.items()):
        for dev in devices:
            osd_id = found.get((node, dev))
            if osd_id is None:
                problems.append(f"{node}:/dev/{dev} is no OSD")
                continue
            f = flags.get(osd_id, {})
            if f.get("up") != 1 or f.get("in") != 1:
                problems.append(f"{node}:/dev/{dev} is osd.{osd_id} but "
                                f"{'up' if f.get('up') == 1 else 'down'}/{'in' if f.get('in') == 1 else 'out'}")
    return problems
