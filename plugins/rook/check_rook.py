"""Conformance with Rook enabled: every configured data disk is an up/in OSD, Ceph is HEALTH_OK,
and a PVC on the default StorageClass binds and mounts. Skipped with the reason when Rook is not
installed (the rook stage recorded nothing)."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from . import health
from .kubectl import CEPH_TOOLS, kubectl_prefix
from .layout import CLUSTER_NAME, NAMESPACE
from .probe import PROBE_NAME, probe_manifest

TOOLS = CEPH_TOOLS


@pytest.fixture(scope="module")
def rook(kubitect_inventory):
    facts = (kubitect_inventory.get("facts") or {}).get("rook") or {}
    if not facts.get("manifests"):
        pytest.skip("Rook is not installed on this cluster (addons.rook disabled or the rook stage never ran)")
    return facts


@pytest.fixture(scope="module")
def kubectl(rook, kubitect_inventory, masters):
    master, prefix = masters[0], kubectl_prefix(kubitect_inventory.get("facts") or {})

    def run(args: list[str], stdin: str | None = None) -> str:
        cmd = f"{prefix} {shlex.join(args)}"
        if stdin is not None:
            cmd = f"printf %s {shlex.quote(stdin)} | {cmd}"
        res = master.root(cmd)
        assert res.rc == 0, f"`kubectl {shlex.join(args)}` on {master.name} failed: {(res.stderr or res.stdout)[-600:]}"
        return res.stdout

    return run


def test_ceph_reports_health_ok(kubectl):
    ok, why = health.cluster_state(kubectl(["-n", NAMESPACE, "get", "cephcluster", CLUSTER_NAME, "-o", "json"]))
    assert ok, f"Ceph is not healthy: {why}"


def test_every_configured_disk_is_an_up_in_osd(rook, kubectl, cluster_hosts):
    wanted = {}
    for node, paths in sorted((rook.get("osd_devices") or {}).items()):
        res = cluster_hosts[node].run("readlink -f " + " ".join(shlex.quote(p) for p in paths))
        assert res.rc == 0, f"node {node}: a data disk's by-id path does not resolve: {res.stderr.strip()}"
        wanted[node] = [line.rsplit("/", 1)[1] for line in res.stdout.split()]
    meta = kubectl(TOOLS + ["osd", "metadata", "-f", "json"])
    dump = kubectl(TOOLS + ["osd", "dump", "-f", "json"])
    problems = health.osd_problems(meta, dump, wanted)
    assert not problems, "configured data disks that are not up/in OSDs: " + "; ".join(problems)


def test_a_pvc_on_the_default_storage_class_binds_and_mounts(kubectl):
    manifest = probe_manifest()
    kubectl(["apply", "-f", "-"], stdin=manifest)
    try:
        deadline, phase = time.monotonic() + 300, ""
        while time.monotonic() < deadline:
            pod = json.loads(kubectl(["-n", "default", "get", "pod", PROBE_NAME, "-o", "json"]))
            pvc = json.loads(kubectl(["-n", "default", "get", "pvc", PROBE_NAME, "-o", "json"]))
            phase = f"pvc {pvc.get('status', {}).get('phase')}, pod {pod.get('status', {}).get('phase')}"
            if pod.get("status", {}).get("phase") == "Succeeded":
                break
            assert pod.get("status", {}).get("phase") != "Failed", f"the probe pod failed ({phase})"
            time.sleep(3)
        else:
            pytest.fail(f"the probe PVC did not bind and mount within 300s ({phase})")
        log = kubectl(["-n", "default", "logs", PROBE_NAME])
        assert "kubitect-probe-ok" in log, f"the probe pod did not write and read its volume: {log[-300:]}"
    finally:
        kubectl(["delete", "--ignore-not-found", "--wait=false", "-f", "-"], stdin=manifest)
