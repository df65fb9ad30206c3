"""The rook addon (issue 18) without a cluster: layout and counts, golden manifests for the seed,
the apply sequence against a stateful kubectl DOUBLE (tests/fixtures/rook_kubectl_double.py),
checksums, health wait, destroy order, and the conformance judges. The real path (real download,
real cluster) is tests/online/test_rook_online.py."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.rook import health
from kubitect_plugins.rook.addon import RookStage
from kubitect_plugins.rook.layout import layout
from kubitect_plugins.rook.manifests import sha256
from kubitect_plugins.rook.release import RELEASES, release_for
from kubitect_plugins.rook.render import cluster_manifests

from kubitect_core.config import load_config
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.plugins import load_registry
from kubitect_core.stage import StageError, StageSkipped
from kubitect_core.topology import data_disk_by_id, data_disk_serial

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from golden_files import check_golden  # noqa: E402
from rook_kubectl_double import KubectlDouble  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "rook"
CLUSTER = "kubitect-ha"


def _seed(tmp_path: Path, rook: dict | None = None, edit=None):
    data = yaml.safe_load((ROOT / "examples" / "ha.yaml").read_text())
    data["addons"] = {"rook": rook if rook is not None else {"enabled": True}}
    if edit:
        edit(data)
    path = tmp_path / "ha.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


# Stand-ins for the upstream files (the real ones come from the release tag: online test); the
# test release pins THEIR checksums, so the verification path is the real one.
STANDIN = {
    "crds.yaml": "\n---\n".join(
        f"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {n}\n"
        for n in ("cephclusters.ceph.rook.io", "cephblockpools.ceph.rook.io")),
    "common.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: rook-ceph\n",
    "operator.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: rook-ceph-operator\n"
                     "  namespace: rook-ceph\nspec:\n  template:\n    spec:\n      containers:\n"
                     "        - image: docker.io/rook/ceph:v1.20.6\n",
    "toolbox.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: rook-ceph-tools\n"
                    "  namespace: rook-ceph\nspec:\n  template:\n    spec:\n      containers:\n"
                    "        - image: quay.io/ceph/ceph:v20\n",
}
TEST_RELEASE = replace(RELEASES["v1.20.6"], files=tuple((n, sha256(t)) for n, t in STANDIN.items()))


class Fetcher:
    def __init__(self, tamper: str | None = None):
        self.urls: list[str] = []
        self.tamper = tamper

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        name = url.rsplit("/", 1)[1]
        text = STANDIN[name] + ("# changed\n" if name == self.tamper else "")
        return text.encode()


def _guest_disks(loaded, drop: str | None = None) -> dict[str, set[str]]:
    """What each guest has under /dev/disk/by-id (the libvirt serials), optionally one missing."""
    out = {}
    for n in loaded.topology.nodes:
        paths = {data_disk_by_id(data_disk_serial(CLUSTER, n.name, d.name)) for d in n.data_disks}
        out[n.name] = {p for p in paths if n.name != drop}
    return out


def _ctx(tmp_path, loaded, record=None, facts=None, **options) -> StageContext:
    progress: list[tuple[str, str]] = []
    ssh = SshAccess("k8s", tmp_path / "id", tmp_path / "id.pub", tmp_path / "known_hosts")
    ctx = StageContext(cluster=CLUSTER, config=loaded.config, topology=loaded.topology,
                       cluster_dir=tmp_path / "c", home=tmp_path / "home", ssh=ssh,
                       record=record if record is not None else {},
                       facts=facts if facts is not None else {"kubernetes": {"installer": "kubeadm",
                                                                             "kubeconfig": "x"}},
                       progress=lambda s, m: progress.append((s, m)), options=options)
    ctx.progress_log = progress  # type: ignore[attr-defined]
    return ctx


def _stage(double, fetch=None, **kw) -> RookStage:
    async def connect(ctx):
        return double
    return RookStage(kubectl=connect, fetch=fetch or Fetcher(), releases={"v1.20.6": TEST_RELEASE},
                     poll_s=0, **kw)


# ------------------------------------------------------------------------------------ layout
def test_seed_layout_three_osd_nodes_give_mon3_mgr2_replicas3(tmp_path):
    loaded = _seed(tmp_path)
    lay = layout(loaded.topology, {})
    assert [n.name for n in lay.osd_nodes] == [f"{CLUSTER}-worker-{i}" for i in (1, 2, 3)]
    assert (lay.mon, lay.mgr, lay.replicas, lay.min_size) == (3, 2, 3, 2)
    for node in lay.osd_nodes:
        assert node.devices == ((
            "rook", f"/dev/disk/by-id/virtio-{data_disk_serial(CLUSTER, node.name, 'rook')}", 512),)


@pytest.mark.parametrize("disks_on, expected", [(1, (1, 1, 1, 1)), (2, (1, 2, 2, 1))])
def test_counts_follow_the_nodes_with_disks(tmp_path, disks_on, expected):
    def edit(d):
        for inst in d["cluster"]["nodes"]["worker"]["instances"][disks_on:]:
            inst.pop("dataDisks")
    lay = layout(_seed(tmp_path, edit=edit).topology, {})
    assert (lay.mon, lay.mgr, lay.replicas, lay.min_size) == expected  # never 2 mons


def test_node_selector_and_masters_only_cluster(tmp_path):
    def label(d):
        d["cluster"]["nodes"]["worker"]["instances"][1]["labels"] = {"rook": True}
    lay = layout(_seed(tmp_path, {"enabled": True, "nodeSelector": {"rook": True}}, edit=label).topology,
                 {"rook": "true"})
    assert [n.name for n in lay.osd_nodes] == [f"{CLUSTER}-worker-2"] and not lay.on_masters

    def masters_only(d):
        disks = d["cluster"]["nodes"]["worker"]["instances"][0]["dataDisks"]
        del d["cluster"]["nodes"]["worker"]
        d["cluster"]["nodes"]["master"]["instances"][0]["dataDisks"] = disks
    loaded = _seed(tmp_path, edit=masters_only)
    lay = layout(loaded.topology, {})
    assert [n.name for n in lay.osd_nodes] == [f"{CLUSTER}-master-1"] and lay.on_masters
    text = cluster_manifests(RELEASES["v1.20.6"], lay)["cephcluster.yaml"]
    assert "node-role.kubernetes.io/control-plane" in text  # masters carry the control-plane taint


def test_golden_manifests_for_the_seed(tmp_path):
    lay = layout(_seed(tmp_path).topology, {})
    manifests = cluster_manifests(release_for(None), lay)
    check_golden(GOLDEN / "seed-cephcluster.yaml", manifests["cephcluster.yaml"])
    check_golden(GOLDEN / "seed-blockpool.yaml", manifests["blockpool.yaml"])
    docs = [d for text in manifests.values() for d in yaml.safe_load_all(text)]
    cluster = next(d for d in docs if d["kind"] == "CephCluster")
    storage = cluster["spec"]["storage"]
    assert storage["useAllDevices"] is False and storage["useAllNodes"] is False
    assert {n["name"]: [d["name"] for d in n["devices"]] for n in storage["nodes"]} == {
        n.name: [p for _d, p, _g in n.devices] for n in lay.osd_nodes}
    assert cluster["spec"]["cephVersion"]["image"] == "quay.io/ceph/ceph:v20.2.4"
    sc = next(d for d in docs if d["kind"] == "StorageClass")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert next(d for d in docs if d["kind"] == "CephBlockPool")["spec"]["replicated"]["size"] == 3


def test_unknown_version_is_refused_with_the_supported_ones(tmp_path):
    loaded = _seed(tmp_path, {"enabled": True, "version": "v1.11.3"})
    with pytest.raises(StageError, match=r"v1\.11\.3 has no pinned manifests.*supported: v1\.20\.6"):
        asyncio.run(RookStage().plan(_ctx(tmp_path, loaded), None))


# ------------------------------------------------------------------------------------ apply
def test_apply_sequence_against_the_double_then_a_second_apply_keeps(tmp_path):
    loaded = _seed(tmp_path)
    double, fetch = KubectlDouble(disks=_guest_disks(loaded)), Fetcher()
    ctx = _ctx(tmp_path, loaded)
    planned = asyncio.run(_stage(double, fetch).plan(ctx, None))
    assert [(c.action, c.name) for c in planned] == [("create", n) for n in (
        "crds.yaml", "common.yaml", "operator.yaml", "toolbox.yaml", "cephcluster.yaml", "blockpool.yaml")]
    assert double.calls == [] and fetch.urls == []  # plan touches nothing

    changes = asyncio.run(_stage(double, fetch).apply(ctx, None))
    assert [(c.action, c.name) for c in changes] == [(c.action, c.name) for c in planned]
    assert fetch.urls == [f"https://raw.githubusercontent.com/rook/rook/v1.20.6/deploy/examples/{n}"
                          for n in STANDIN]
    verbs = [(a[0] if a[0] != "-n" else a[2], (yaml.safe_load_all(s) and next(yaml.safe_load_all(s))["kind"])
              if s else None) for a, s in double.calls]
    polls = [v for v in verbs if v[0] in ("get", "exec")]
    assert verbs[:len(verbs) - len(polls)] == [
        ("apply", "CustomResourceDefinition"), ("wait", None), ("apply", "Namespace"), ("apply", "Deployment"),
        ("rollout", None), ("apply", "Deployment"), ("apply", "CephCluster"), ("apply", "CephBlockPool")]
    assert len(polls) >= 3 and verbs[-2:] == [("get", None), ("exec", None)]  # HEALTH_OK, then the OSD count
    toolbox = double.objects[("Deployment", "rook-ceph", "rook-ceph-tools")]
    assert toolbox["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/ceph/ceph:v20.2.4"
    waits = [m for s, m in ctx.progress_log if m.startswith("waiting for Ceph HEALTH_OK")]
    assert any("Configuring Ceph OSDs" in m and "TOO_FEW_OSDS" in m for m in waits), waits  # says what it waits for
    rec = ctx.record
    assert rec["health"] == "HEALTH_OK" and rec["version"] == "v1.20.6" and rec["ceph_image"].endswith("v20.2.4")
    assert rec["counts"] == {"mon": 3, "mgr": 2, "replicas": 3, "min_size": 2}
    assert sorted(rec["osd_devices"]) == [f"{CLUSTER}-worker-{i}" for i in (1, 2, 3)]
    assert double.closed == 1

    again = asyncio.run(_stage(double, fetch).apply(ctx, None))
    assert {c.action for c in again} == {"keep"} and len(fetch.urls) == 4  # cached, verified, not re-fetched


def test_an_interrupted_apply_is_recorded_and_the_rerun_converges(tmp_path):
    loaded = _seed(tmp_path)
    outage = 'error: deployment "rook-ceph-operator" exceeded its progress deadline'
    double = KubectlDouble(disks=_guest_disks(loaded), fail_once={"rollout": outage})
    ctx = _ctx(tmp_path, loaded)
    with pytest.raises(StageError, match="the Rook operator rollout failed: .*exceeded its progress deadline"):
        asyncio.run(_stage(double).apply(ctx, None))
    assert list(ctx.record["manifests"]) == ["crds.yaml", "common.yaml", "operator.yaml"]
    assert [(c.action, c.name) for c in asyncio.run(_stage(double).plan(ctx, None))] == [
        ("keep", "crds.yaml"), ("keep", "common.yaml"), ("keep", "operator.yaml"), ("create", "toolbox.yaml"),
        ("create", "cephcluster.yaml"), ("create", "blockpool.yaml")]
    asyncio.run(_stage(double).apply(ctx, None))
    assert ctx.record["health"] == "HEALTH_OK" and len(ctx.record["manifests"]) == 6


def test_a_declared_disk_missing_in_the_guest_times_out_naming_it(tmp_path):
    loaded = _seed(tmp_path)
    double = KubectlDouble(disks=_guest_disks(loaded, drop=f"{CLUSTER}-worker-2"))
    ctx = _ctx(tmp_path, loaded)
    with pytest.raises(StageError) as info:
        asyncio.run(_stage(double, timeout_s=0.2).apply(ctx, None))
    msg = str(info.value)
    assert "did not report HEALTH_OK" in msg and "no such device" in msg and f"{CLUSTER}-worker-2:" in msg
    assert ctx.record["manifests"]  # what was applied is recorded: the re-run converges


def test_a_tampered_manifest_is_refused_before_anything_is_applied(tmp_path):
    loaded = _seed(tmp_path)
    double = KubectlDouble(disks=_guest_disks(loaded))
    with pytest.raises(StageError, match=r"operator\.yaml: sha256 [0-9a-f]{64} does not match the pinned"):
        asyncio.run(_stage(double, Fetcher(tamper="operator.yaml")).apply(_ctx(tmp_path, loaded), None))
    assert double.calls == []


def test_the_double_enforces_order():
    """The double is stateful: a CephCluster before the CRDs, or the operator before its namespace, fails."""
    double = KubectlDouble(disks={})
    cluster = "apiVersion: ceph.rook.io/v1\nkind: CephCluster\nmetadata: {name: rook-ceph, namespace: rook-ceph}\n"
    res = asyncio.run(double(["apply", "-f", "-"], stdin=cluster))
    assert not res.ok and "ensure CRDs are installed first" in res.stderr
    res = asyncio.run(double(["apply", "-f", "-"], stdin=STANDIN["operator.yaml"]))
    assert not res.ok and 'namespaces "rook-ceph" not found' in res.stderr


def test_disabled_or_without_kubernetes(tmp_path):
    double = KubectlDouble(disks={})
    off = _seed(tmp_path, {"enabled": False})
    assert asyncio.run(_stage(double).apply(_ctx(tmp_path, off), None)) == [] and double.calls == []
    with pytest.raises(StageSkipped, match="Kubernetes is not installed"):
        asyncio.run(_stage(double).apply(_ctx(tmp_path, _seed(tmp_path), facts={}), None))


# ------------------------------------------------------------------------------------ destroy
def test_destroy_removes_the_addon_cluster_first_then_the_operator(tmp_path):
    loaded = _seed(tmp_path)
    double = KubectlDouble(disks=_guest_disks(loaded))
    ctx = _ctx(tmp_path, loaded)
    asyncio.run(_stage(double).apply(ctx, None))
    double.calls.clear()
    changes = asyncio.run(_stage(double).destroy(ctx, None))
    assert [c.name for c in changes] == ["blockpool.yaml", "cephcluster.yaml", "toolbox.yaml", "operator.yaml",
                                         "common.yaml", "crds.yaml"]
    assert all(c.detail == "" for c in changes), changes  # each removal succeeded (operator still up for the cluster)
    assert double.objects == {} and ctx.record == {}
    assert asyncio.run(_stage(double).destroy(ctx, None)) == []  # nothing recorded: nothing to do


def test_destroy_with_the_machines_going_tolerates_an_unreachable_api(tmp_path):
    async def unreachable(ctx):
        raise OSError("connection refused")
    ctx = _ctx(tmp_path, _seed(tmp_path), record={"manifests": {"crds.yaml": "x"}}, machines_deleted=True)
    stage = RookStage(kubectl=unreachable, fetch=Fetcher(), releases={"v1.20.6": TEST_RELEASE})
    [change] = asyncio.run(stage.destroy(ctx, None))
    assert change.action == "delete" and "goes with the VMs" in change.detail
    ctx.options.clear()
    with pytest.raises(StageError, match="cannot reach the cluster"):
        asyncio.run(stage.destroy(ctx, None))


# ------------------------------------------------------------------------------------ wiring, judges
def test_the_stage_is_registered_through_the_entry_point_after_kubernetes():
    registry = load_registry()
    names = [s.name for s in registry.stages]
    assert names.index("rook") == names.index("kubernetes") + 1 and names[-1] == "verify"
    assert any(m.endswith("rook/check_rook.py") for m in registry.conformance_modules())


def test_health_and_osd_judges():
    ok, why = health.cluster_state(json.dumps({"status": {"phase": "Ready", "ceph": {"health": "HEALTH_OK"}}}))
    assert ok and why == "HEALTH_OK"
    ok, why = health.cluster_state(json.dumps({"status": {"phase": "Progressing", "ceph": {
        "health": "HEALTH_WARN", "details": {"OSD_DOWN": {"message": "1 osds down"}}}}}))
    assert not ok and "OSD_DOWN: 1 osds down" in why
    meta = json.dumps([{"id": 0, "hostname": "w1", "devices": "vdb"}, {"id": 1, "hostname": "w2", "devices": "vdb"}])
    dump = json.dumps({"osds": [{"osd": 0, "up": 1, "in": 1}, {"osd": 1, "up": 0, "in": 1}]})
    assert health.osd_problems(meta, dump, {"w1": ["vdb"], "w2": ["vdb"], "w3": ["vdb"]}) == [
        "w2:/dev/vdb is osd.1 but down/in", "w3:/dev/vdb is no OSD"]


def test_verify_runs_the_rook_checks_and_skips_them_with_the_reason_without_rook(tmp_path):
    """The module the plugin contributes runs in the verify stage's child pytest (its file name is
    not test_*: it is collected because it is named explicitly); without Rook every check skips."""
    from types import SimpleNamespace

    from kubitect_plugins.rook import kubitect_conformance_modules

    from kubitect_core.verify import run_conformance

    ctx = _ctx(tmp_path, _seed(tmp_path, {"enabled": False}))
    ctx.config = SimpleNamespace(hosts=[])
    registry = SimpleNamespace(conformance_modules=kubitect_conformance_modules)
    asyncio.run(run_conformance(ctx, registry))
    report = json.loads((ctx.cluster_dir / "reports" / "conformance.json").read_text())
    assert {c["name"] for c in report["cases"]} == {
        "test_ceph_reports_health_ok", "test_every_configured_disk_is_an_up_in_osd",
        "test_a_pvc_on_the_default_storage_class_binds_and_mounts"}
    assert {c["outcome"] for c in report["cases"]} == {"skipped"}
    assert all("Rook is not installed on this cluster" in c["message"] for c in report["cases"])
