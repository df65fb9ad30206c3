"""Rook on scale (issue 18, lifecycle): a worker added gets its OSD (and apply waits for it), a
worker with OSDs that leaves is drained first through the `kubitect_nodes_leaving` hook (or the
removal is refused with the numbers), and destroy removes the addon before the machines.

Ceph is the stateful kubectl DOUBLE of tests/fixtures/rook_kubectl_double.py: OSDs appear a poll
after their disk is declared, `osd out` starts a rebalance that `pg stat` reports for a few polls,
and purging an OSD that still holds data is recorded as data lost, so the order of the calls matters.
The hook is called through the plugin manager, as the engine calls it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from pathlib import Path

import pytest
import yaml
from kubitect_plugins.rook import drain

from kubitect_core.plugins import load_registry
from kubitect_core.stage import StageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from rook_kubectl_double import KubectlDouble  # noqa: E402
from test_rook import CLUSTER, _ctx, _guest_disks, _seed, _stage  # noqa: E402

WORKER4 = f"{CLUSTER}-worker-4"


def _four_workers(data):
    data["cluster"]["nodes"]["worker"]["instances"].append(
        {"id": 4, "ip": "10.10.13.23", "host": "host5",
         "dataDisks": [{"name": "rook", "pool": "data-pool", "size": 512}]})


def _installed(tmp_path, edit=None, **double_kw):
    """The seed (optionally edited) with Rook applied against a fresh double."""
    loaded = _seed(tmp_path, edit=edit)
    double = KubectlDouble(disks=_guest_disks(loaded), **double_kw)
    ctx = _ctx(tmp_path, loaded)
    asyncio.run(_stage(double).apply(ctx, None))
    return loaded, double, ctx


def _hook(monkeypatch, double, rook_ctx, loaded, leaving: list[str], dry_run: bool):
    """Calls kubitect_nodes_leaving through the plugin manager with a kubernetes-stage context."""
    async def connect(ctx):
        return double
    monkeypatch.setattr(drain, "connect", connect)
    kube_ctx = _ctx(rook_ctx.cluster_dir.parent, loaded,
                    facts={"kubernetes": {"installer": "kubeadm", "kubeconfig": "x"}, "rook": rook_ctx.record},
                    rook_poll_s=0, rook_drain_timeout_s=5)
    nodes = [n for n in loaded.topology.nodes if n.name in leaving]
    # Only Rook's implementation: the load balancer's would SSH to the config's (unowned) addresses.
    hook = load_registry().pm.hook.kubitect_nodes_leaving
    rook = [impl.function for impl in hook.get_hookimpls() if "rook" in impl.plugin_name]
    assert len(rook) == 1, [impl.plugin_name for impl in hook.get_hookimpls()]
    result = rook[0](ctx=kube_ctx, nodes=nodes, dry_run=dry_run)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return list(result), kube_ctx


def _ceph(double, *cmd):
    res = asyncio.run(double(["-n", "rook-ceph", "exec", "deploy/rook-ceph-tools", "--", "ceph", *cmd, "-f", "json"]))
    assert res.ok, res.stderr
    return json.loads(res.stdout)


# ------------------------------------------------------------------------------------ scale out
def test_a_worker_added_gets_its_osd_and_apply_waits_for_it(tmp_path):
    loaded, double, ctx = _installed(tmp_path)
    assert _ceph(double, "osd", "stat")["num_in_osds"] == 3

    bigger = _seed(tmp_path, edit=_four_workers)
    double.disks = _guest_disks(bigger)  # the new guest has its disk under by-id
    ctx = _ctx(tmp_path, bigger, record=ctx.record)
    planned = {c.name: c for c in asyncio.run(_stage(double).plan(ctx, None))}
    assert planned["cephcluster.yaml"].action == "change" and "4 OSD(s)" in planned["cephcluster.yaml"].detail
    asyncio.run(_stage(double).apply(ctx, None))

    cluster = double.objects[("CephCluster", "rook-ceph", "rook-ceph")]
    new_paths = sorted(_guest_disks(bigger)[WORKER4])
    assert double.declared(cluster)[WORKER4] == new_paths  # the new disk, by its by-id path
    # Ceph said HEALTH_OK while the new OSD was still being prepared: apply waited for the count.
    assert any(m == "waiting for the OSDs: 3 up / 3 in of 4 declared OSD(s)" for _s, m in ctx.progress_log)
    assert ctx.record["osds"] == 4 and _ceph(double, "osd", "stat")["num_up_osds"] == 4
    assert sorted(ctx.record["osd_devices"]) == [f"{CLUSTER}-worker-{i}" for i in (1, 2, 3, 4)]


# ------------------------------------------------------------------------------------ drain on scale-in
def test_a_leaving_worker_is_drained_before_it_goes(tmp_path, monkeypatch):
    loaded, double, rook_ctx = _installed(tmp_path, edit=_four_workers, rebalance_polls=3)
    [w4_osd] = [oid for oid, o in double.osds.items() if o["host"] == WORKER4]

    planned, _ = _hook(monkeypatch, double, rook_ctx, loaded, [WORKER4], dry_run=True)
    assert [(c.action, c.kind, c.name) for c in planned] == [
        ("change", "osd", f"osd.{w4_osd}"), ("change", "manifest", "cephcluster.yaml"),
        ("delete", "osd", f"osd.{w4_osd}")]
    assert double.osds[w4_osd]["in"] and not any("out" in a for a, _s in double.calls[-3:])  # plan touched nothing

    double.calls.clear()
    done, kube_ctx = _hook(monkeypatch, double, rook_ctx, loaded, [WORKER4], dry_run=False)
    assert [(c.action, c.name) for c in done] == [(c.action, c.name) for c in planned]
    ceph = [" ".join(a[a.index("ceph") + 1:]) if "ceph" in a else " ".join(a) for a, _s in double.calls]
    out_at = ceph.index(f"osd out {w4_osd}")
    clean_at = max(i for i, c in enumerate(ceph) if c.startswith("pg stat"))
    safe_at = [i for i, c in enumerate(ceph) if c.startswith("osd safe-to-destroy")]
    purge_at = ceph.index(f"osd purge {w4_osd} --yes-i-really-mean-it")
    assert out_at < clean_at < safe_at[-1] < purge_at  # out, rebalanced, safe, then purged
    assert sum(c.startswith("pg stat") for c in ceph) >= 3  # it waited through the backfill
    assert double.lost == [] and w4_osd not in double.osds  # no data lost, the OSD is gone
    assert WORKER4 not in double.declared(double.objects[("CephCluster", "rook-ceph", "rook-ceph")])
    assert WORKER4 not in rook_ctx.record["osd_devices"]
    assert WORKER4 not in yaml.safe_load(rook_ctx.record["rendered"]["cephcluster.yaml"])["spec"]["placement"][
        "all"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"]
    assert any("waiting for Ceph to move the data off" in m and "backfilling" in m for _s, m in kube_ctx.progress_log)

    # The double bites: purging without the drain would have lost data.
    (tmp_path / "b").mkdir()
    loaded2, double2, _ = _installed(tmp_path / "b", edit=_four_workers)
    [other] = [oid for oid, o in double2.osds.items() if o["host"] == WORKER4]
    asyncio.run(double2(["-n", "rook-ceph", "exec", "deploy/rook-ceph-tools", "--", "ceph", "osd", "purge", str(other),
                         "--yes-i-really-mean-it"]))
    assert double2.lost == [other]


def test_leaving_nodes_without_osds_or_without_rook_need_nothing(tmp_path, monkeypatch):
    loaded, double, rook_ctx = _installed(tmp_path)
    master = f"{CLUSTER}-master-1"
    assert _hook(monkeypatch, double, rook_ctx, loaded, [master], dry_run=False)[0] == []
    rook_ctx.record.clear()  # Rook never installed
    assert _hook(monkeypatch, double, rook_ctx, loaded, [f"{CLUSTER}-worker-1"], dry_run=False)[0] == []


def test_too_few_nodes_for_the_replicas_is_refused_with_the_numbers(tmp_path, monkeypatch):
    loaded, double, rook_ctx = _installed(tmp_path)  # 3 OSD nodes, pool size 3
    for dry_run in (True, False):
        double.calls.clear()
        with pytest.raises(StageError) as info:
            _hook(monkeypatch, double, rook_ctx, loaded, [f"{CLUSTER}-worker-3"], dry_run=dry_run)
        msg = str(info.value)
        assert "2 node(s) with OSDs would remain (2 OSD(s)), but pool 'ceph-blockpool' keeps 3 replicas" in msg
        assert "nothing was changed" in msg
        assert not any("out" in a or "purge" in a for a, _s in double.calls)
    assert all(o["in"] for o in double.osds.values()) and len(double.osds) == 3


def test_too_little_room_left_is_refused_with_the_numbers(tmp_path, monkeypatch):
    # 4 OSDs of 10 GiB holding 30 GiB raw: three would have 30 GiB, 85% of which is 25.5 GiB.
    loaded, double, rook_ctx = _installed(tmp_path, edit=_four_workers, disk_gib=10, used_gib=30)
    with pytest.raises(StageError) as info:
        _hook(monkeypatch, double, rook_ctx, loaded, [WORKER4], dry_run=False)
    msg = str(info.value)
    assert "the data in use (30.0 GiB raw, replicas included) would not fit on the remaining OSDs (30.0 GiB" in msg
    assert "85%: 25.5 GiB" in msg and double.lost == [] and all(o["in"] for o in double.osds.values())


# ------------------------------------------------------------------------------------ destroy order
def test_destroy_removes_the_addon_before_the_machines():
    """The engine destroys in reverse stage order, and the rook stage sits after kubernetes, so it is
    destroyed before the installer, the load balancers and the machine layers."""
    names = [s.name for s in reversed(load_registry().stages)]
    assert names.index("rook") < min(names.index(s) for s in ("kubernetes", "loadbalancers", "vms", "storage",
                                                              "network"))


def test_an_interrupted_drain_is_resumed_by_the_next_run(tmp_path, monkeypatch):
    loaded, double, rook_ctx = _installed(tmp_path, edit=_four_workers, rebalance_polls=6)
    [w4_osd] = [oid for oid, o in double.osds.items() if o["host"] == WORKER4]

    async def connect(ctx):
        return double
    monkeypatch.setattr(drain, "connect", connect)
    ctx = _ctx(tmp_path, loaded, facts={"kubernetes": {"installer": "kubeadm"}, "rook": rook_ctx.record},
               rook_poll_s=0, rook_drain_timeout_s=0)
    nodes = [n for n in loaded.topology.nodes if n.name == WORKER4]
    with pytest.raises(StageError, match="did not happen within 0s .*the OSDs stay out, nothing was deleted"):
        asyncio.run(drain.nodes_leaving(ctx, nodes, dry_run=False))
    assert not double.osds[w4_osd]["in"] and w4_osd in double.osds and double.lost == []

    ctx.options["rook_drain_timeout_s"] = 5
    double.calls.clear()
    asyncio.run(drain.nodes_leaving(ctx, nodes, dry_run=False))
    assert not any("out" in a for a, _s in double.calls)  # already out: not marked again
    assert w4_osd not in double.osds and double.lost == []
