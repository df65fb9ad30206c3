"""Waiting until the cluster's nodes are Ready, read from `kubectl get nodes -o json` on a control plane."""

from __future__ import annotations

import asyncio
import json
import time

from kubitect_core.contracts import StageContext
from kubitect_core.kube.cluster import cluster_nodes
from kubitect_core.kube.sources import ready_timeout
from kubitect_core.remote import Remote
from kubitect_core.stage import StageError


def ready_nodes(node_list_json: str) -> dict[str, dict[str, str]]:
    """Node name -> {"ready": "True"/"False"/"Unknown", "version": kubelet version} from kubectl JSON."""
    try:
        items = json.loads(node_list_json).get("items", [])
    except ValueError:
        return {}
    out = {}
    for item in items:
        name = item.get("metadata", {}).get("name")
        status = item.get("status", {})
        ready = next((c.get("status", "Unknown") for c in status.get("conditions", []) if c.get("type") == "Ready"),
                     "Unknown")
        out[name] = {"ready": ready, "version": status.get("nodeInfo", {}).get("kubeletVersion", "")}
    return out


async def wait_ready(remote: Remote, kubectl: str, names: list[str], timeout: float, progress,
                     interval: float = 0.5) -> dict[str, dict[str, str]]:
    """Polls `kubectl get nodes -o json` on a control plane until every named node is Ready.

    Raises StageError naming the nodes that never became Ready (and their last condition).
    """
    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str, str]] = {}
    while True:
        res = await remote.run(f"{kubectl} get nodes -o json", check=False, sudo=True, timeout=60)
        if res.ok:
            seen = ready_nodes(res.stdout)
        missing = [n for n in names if seen.get(n, {}).get("ready") != "True"]
        if not missing:
            return seen
        if time.monotonic() >= deadline:
            states = ", ".join(f"{n}: {seen.get(n, {}).get('ready', 'not registered')}" for n in missing)
            raise StageError(f"nodes not Ready after {timeout:g}s ({states})")
        progress(remote.name, f"waiting for {len(missing)} node(s) to be Ready")
        await asyncio.sleep(interval)


async def ready_then_fetch(ctx: StageContext, first: Remote, kubectl: str, admin_kubeconfig: str) -> str:
    """Waits until every cluster node is Ready, then returns the admin kubeconfig from the first master."""
    names = [n.name for n in cluster_nodes(ctx)]
    ctx.progress(ctx.topology.masters[0].name, f"waiting until {len(names)} node(s) are Ready")
    await wait_ready(first, kubectl, names, ready_timeout(ctx), ctx.progress)
    return (await first.get(admin_kubeconfig, sudo=True)).decode()
