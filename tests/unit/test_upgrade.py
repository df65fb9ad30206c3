"""Rolling upgrades (kubitect_core.sdk.kube.upgrade) and their preflight, with no node.

What is real: the orchestrator (preflight, lock, snapshot, order, batches, checkpoints, resume),
node_ops' cordon/drain/uncordon and their arguments, the kubeadm driver's commands. What is a
double: kubectl and the cluster behind it, which is the lab's kubectl TEST DOUBLE
(tests/lab/doubles/kube_double.py) run here as a local process on a state directory
(KUBE_DOUBLE_STATE), and a stand-in installer driver that "upgrades" a node by reporting its
kubelet at the new version, as a restarted kubelet does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubitect_plugins.kubeadm.upgrade import KubeadmUpgrade

from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.kube import upgrade as up
from kubitect_core.kube.node_ops import NodeState
from kubitect_core.remote import Result
from kubitect_core.stage import StageError
from kubitect_core.topology import Node, Topology

DOUBLE = Path(__file__).resolve().parents[1] / "lab" / "doubles" / "kube_double.py"
KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"


def node(role: str, i: int) -> Node:
    return Node(role=role, id=str(i), name=f"c-{role}-{i}", host="h", ip=f"10.0.0.{10 * (role == 'worker') + i}",
                mac=None, cpu=1, ram_gib=1, main_disk_gib=10, data_disks=())


MASTERS = [node("master", i) for i in (1, 2, 3)]
WORKERS = [node("worker", i) for i in (1, 2, 3)]
ALL = [n.name for n in MASTERS + WORKERS]


# ------------------------------------------------------------------ preflight (pure)


def seen(api="v1.33.4", version="v1.33.4", **over) -> up.Observed:
    nodes = {n: NodeState(n, "True", False, version) for n in ALL}
    nodes.update(over)
    return up.Observed(api, nodes)


def test_preflight_one_minor_and_a_patch_pass():
    assert up.preflight(ALL, seen(), "v1.34.1", walk=False) == [(1, 34)]
    assert up.preflight(ALL, seen(), "v1.33.9", walk=False) == [(1, 33)]


def test_preflight_refuses_a_skipped_minor_with_the_path_and_walks_it_when_asked():
    with pytest.raises(StageError) as err:
        up.preflight(ALL, seen("v1.32.3", "v1.32.3"), "v1.34.2", walk=False)
    assert "1.32 → 1.33 → 1.34" in str(err.value) and "--walk-minors" in str(err.value)
    assert up.preflight(ALL, seen("v1.32.3", "v1.32.3"), "v1.34.2", walk=True) == [(1, 33), (1, 34)]


def test_preflight_refuses_a_downgrade():
    with pytest.raises(StageError, match="downgrades are not supported"):
        up.preflight(ALL, seen(), "v1.33.1", walk=False)


def test_preflight_names_missing_strange_and_unready_nodes():
    nodes = dict(seen().nodes)
    del nodes["c-worker-3"]
    nodes["stray"] = NodeState("stray", "True", False, "v1.33.4")
    nodes["c-master-2"] = NodeState("c-master-2", "False", False, "v1.33.4")
    with pytest.raises(StageError) as err:
        up.preflight(ALL, up.Observed("v1.33.4", nodes), "v1.34.0", walk=False)
    text = str(err.value)
    assert "not in the cluster: c-worker-3" in text and "not in the config: stray" in text
    assert "not Ready: c-master-2 (False)" in text and "nothing was changed" in text


def test_preflight_kubelet_skew_policy():
    too_old = seen("v1.33.4", **{"c-worker-1": NodeState("c-worker-1", "True", False, "v1.30.9")})
    with pytest.raises(StageError, match=r"more than 3 minors older than v1.34.0.*c-worker-1 \(v1.30.9\)"):
        up.preflight(ALL, too_old, "v1.34.0", walk=False)
    three_older = seen("v1.33.4", **{"c-worker-1": NodeState("c-worker-1", "True", False, "v1.31.0")})
    assert up.preflight(ALL, three_older, "v1.34.0", walk=False) == [(1, 34)]
    newer = seen("v1.33.4", **{"c-worker-2": NodeState("c-worker-2", "True", False, "v1.34.0")})
    with pytest.raises(StageError, match=r"newer than the API server v1.33.4: c-worker-2"):
        up.preflight(ALL, newer, "v1.34.0", walk=False)


def test_preflight_on_resume_tolerates_the_node_it_stopped_at_and_the_ones_it_finished():
    mid = seen("v1.33.4", **{"c-master-1": NodeState("c-master-1", "True", False, "v1.34.0"),
                             "c-master-2": NodeState("c-master-2", "False", True, "v1.33.4")})
    with pytest.raises(StageError):
        up.preflight(ALL, mid, "v1.34.0", walk=False)
    assert up.preflight(ALL, mid, "v1.34.0", walk=False, resuming=["c-master-2"],
                        upgraded=["c-master-1"]) == [(1, 34)]


def test_k3s_versions_compare_by_their_kubernetes_part():
    k3s = seen("v1.33.4+k3s1", "v1.33.4+k3s1")
    assert up.preflight(ALL, k3s, "v1.34.2+k3s1", walk=False) == [(1, 34)]


def test_batches_and_max_unavailable():
    assert [[n.name for n in b] for b in up.batches(WORKERS, 2)] == [["c-worker-1", "c-worker-2"], ["c-worker-3"]]
    ctx = SimpleNamespace(options={"upgrade_max_unavailable": 0})
    with pytest.raises(StageError, match="at least 1"):
        up.max_unavailable(ctx)
    assert up.max_unavailable(SimpleNamespace(options={})) == 1


# ------------------------------------------------------------------ the orchestrator on the kubectl double


class Cluster:
    """The kubectl double's state directory plus a log of everything the upgrade did, in order."""

    def __init__(self, tmp: Path, version: str):
        self.state = tmp / "double"
        self.state.mkdir()
        (self.state / "version").write_text(version + "\n")
        (self.state / "apiserver-version").write_text(version + "\n")
        self.kubectl = self.state / "kubectl"
        self.kubectl.symlink_to(DOUBLE)
        self.env = {**os.environ, "KUBE_DOUBLE_STATE": str(self.state)}
        self.log: list[tuple[str, ...]] = []
        self.lock: str | None = None
        self.snapshot_bytes = b"etcd-snapshot-bytes"
        self.plant(nodes={n.name: {"control_plane": n.role == "master", "kubelet": version} for n in MASTERS + WORKERS})

    def plant(self, **objects) -> None:
        subprocess.run([sys.executable, str(DOUBLE), "plant", json.dumps(objects)], env=self.env, check=True,
                       capture_output=True)

    def nodes(self) -> dict:
        out = subprocess.run([sys.executable, str(DOUBLE), "state"], env=self.env, check=True, capture_output=True,
                             text=True).stdout
        return json.loads(out)["nodes"]


class FakeRemote:
    """A node's Remote: kubectl goes to the double, the lock and snapshot files to the Cluster."""

    def __init__(self, cluster: Cluster, name: str):
        self.cluster, self.name, self.label = cluster, name, f"node {name}"

    async def run(self, command: str, *, check: bool = True, sudo: bool = False, timeout=None, input=None) -> Result:
        c = self.cluster
        if command.startswith(KUBECTL):
            args = shlex.split(command)[3:]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(c.kubectl), *args, env=c.env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            if args[:1] in (["cordon"], ["uncordon"], ["drain"]):
                c.log.append((args[0], args[1]))
            res = Result(proc.returncode, out.decode(), err.decode())
        elif f"mkdir {up.LOCK_DIR}" in command:
            owner = shlex.split(command.split("echo ", 1)[1].split(" > ")[0])[0]
            res = Result(1, "", "exists") if c.lock else Result(0, "", "")
            if not c.lock:
                c.lock = owner
                c.log.append(("lock", owner.split()[0]))
        elif command.startswith("cat ") and "upgrade.lock" in command:
            res = Result(0, c.lock or "", "")
        elif command.startswith(f"rm -rf {up.LOCK_DIR}"):
            c.lock = None
            c.log.append(("unlock",))
            res = Result(0, "", "")
        elif "readyz" in command:
            c.log.append(("api-healthy-via-endpoint", self.name))
            res = Result(0, "", "")
        else:
            res = Result(0, "", "")
        if check and not res.ok:
            raise AssertionError(f"{command} failed: {res.stderr}")
        return res

    async def get(self, path: str, *, sudo: bool = False) -> bytes:
        return self.cluster.snapshot_bytes


class StandInDriver:
    """An installer driver that "upgrades" a node by restarting its kubelet at the new version."""

    kubectl = KUBECTL

    def __init__(self, cluster: Cluster, fail_at: str | None = None):
        self.cluster, self.fail_at = cluster, fail_at

    async def upgrade_node(self, ctx, n: Node, r, version: str, first: bool) -> list[str]:
        self.cluster.log.append(("upgrade", n.name, "apply" if first else "node"))
        if n.name == self.fail_at:
            self.fail_at = None
            raise StageError(f"{n.name}: kubeadm upgrade node failed (injected)")
        await asyncio.sleep(0.05)
        self.cluster.plant(nodes={n.name: {"kubelet": version}})  # the restarted kubelet reports itself
        return ["kubelet restarted"]

    async def snapshot(self, ctx, r, name: str):
        self.cluster.log.append(("snapshot", name))
        return f"/var/lib/kubitect/{name}.db", ""

    async def hop_version(self, ctx, minor):
        return f"v{minor[0]}.{minor[1]}.7"


def make_ctx(tmp: Path, record: dict, **options) -> StageContext:
    topo = Topology(cluster="c", nodes=tuple(MASTERS + WORKERS), vip="10.0.0.100", endpoint="10.0.0.100",
                    virtual_router_id=1)
    return StageContext(cluster="c", config=None, topology=topo, cluster_dir=tmp / "cdir", home=tmp,
                        ssh=SshAccess("k", tmp / "k", tmp / "k.pub", tmp / "kh"), record=record,
                        options={"ready_timeout": 10, **options}, checkpoint=lambda: None)


def run_upgrade(tmp, cluster, record, target, driver=None, **options):
    ctx = make_ctx(tmp, record, **options)
    remotes = {n.name: FakeRemote(cluster, n.name) for n in MASTERS + WORKERS}

    async def remote(n):
        return remotes[n.name]

    return asyncio.run(up.upgrade(ctx, None, remotes[MASTERS[0].name], driver or StandInDriver(cluster), target,
                                  remote))


def steps_of(log, name):
    return [e[0] for e in log if len(e) > 1 and e[1] == name]


def test_order_per_node_masters_one_at_a_time_then_workers_in_batches(tmp_path):
    cluster = Cluster(tmp_path, "v1.33.4")
    record: dict = {}
    changes = run_upgrade(tmp_path, cluster, record, "v1.34.1", upgrade_max_unavailable=2)
    log = cluster.log
    assert log[0][0] == "lock" and log[1][0] == "snapshot" and log[-1] == ("unlock",)
    # every node: cordon, drain, the installer's steps, API healthy, uncordon, in that order
    for n in MASTERS + WORKERS:
        assert steps_of(log, n.name) == ["cordon", "drain", "upgrade", "api-healthy-via-endpoint", "uncordon"]
    # kubeadm upgrade apply on the first control plane only, `upgrade node` elsewhere
    assert [e[2] for e in log if e[0] == "upgrade"].count("apply") == 1
    assert ("upgrade", MASTERS[0].name, "apply") in log
    # a control plane starts only after the previous one is back (uncordoned)
    idx = {(e[0], e[1]): i for i, e in enumerate(log) if len(e) > 1}
    for a, b in zip(MASTERS, MASTERS[1:], strict=False):
        assert idx[("cordon", b.name)] > idx[("uncordon", a.name)]
    assert min(idx[("cordon", w.name)] for w in WORKERS) > idx[("uncordon", MASTERS[-1].name)]
    # batches of 2: worker 3 waits for workers 1 and 2, who overlap
    assert idx[("cordon", "c-worker-2")] < idx[("uncordon", "c-worker-1")]
    assert idx[("cordon", "c-worker-3")] > max(idx[("uncordon", "c-worker-1")], idx[("uncordon", "c-worker-2")])
    # the result: every kubelet at the target, none left cordoned, the snapshot kept 0600
    nodes = cluster.nodes()
    assert {n: v["kubelet"] for n, v in nodes.items()} == dict.fromkeys(ALL, "v1.34.1")
    assert not any(v.get("unschedulable") for v in nodes.values())
    snap = next(c for c in changes if c.kind == "etcd-snapshot")
    files = list((tmp_path / "cdir" / "backups").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == cluster.snapshot_bytes
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600 and str(files[0]) in snap.detail
    assert "upgrade" not in record and record["upgrades"][-1]["to"] == "v1.34.1"
    assert sorted(c.name for c in changes if c.kind == "node") == sorted(ALL)


def test_a_failure_at_the_second_node_resumes_there_without_redoing_the_first(tmp_path):
    cluster = Cluster(tmp_path, "v1.33.4")
    record: dict = {}
    with pytest.raises(StageError, match="injected"):
        run_upgrade(tmp_path, cluster, record, "v1.34.1", driver=StandInDriver(cluster, fail_at="c-master-2"))
    assert record["upgrade"]["done"] == ["c-master-1"] and record["upgrade"]["current"] == ["c-master-2"]
    assert cluster.lock is not None  # the lock stays with the interrupted run ...
    assert cluster.nodes()["c-master-2"]["unschedulable"] is True  # ... and the node stays cordoned
    first_log = list(cluster.log)
    cluster.log.clear()
    changes = run_upgrade(tmp_path, cluster, record, "v1.34.1")  # ... which the re-run resumes
    assert steps_of(cluster.log, "c-master-1") == []  # finished: not redone
    assert [e for e in cluster.log if e[0] == "snapshot"] == []  # the snapshot was taken already
    assert steps_of(cluster.log, "c-master-2")[:3] == ["cordon", "drain", "upgrade"]
    assert [c.name for c in changes if c.kind == "node"] == ALL[1:]
    assert ("upgrade", "c-master-2", "node") in cluster.log and ("upgrade", "c-master-1", "apply") in first_log
    assert cluster.lock is None and "upgrade" not in record


def test_another_run_holding_the_lock_is_refused_before_anything_changes(tmp_path):
    cluster = Cluster(tmp_path, "v1.33.4")
    cluster.lock = "kubitect-otherrun other-cluster 2026-01-01T00:00:00+00:00"
    with pytest.raises(StageError, match="another upgrade holds the upgrade lock.*kubitect-otherrun"):
        run_upgrade(tmp_path, cluster, {}, "v1.34.1")
    assert not any(e[0] in ("cordon", "snapshot") for e in cluster.log)


def test_a_walk_goes_through_each_minor_with_a_snapshot_before_each(tmp_path):
    cluster = Cluster(tmp_path, "v1.32.3")
    record: dict = {}
    with pytest.raises(StageError, match="1.32 → 1.33 → 1.34"):
        run_upgrade(tmp_path, cluster, record, "v1.34.2")
    assert cluster.log == [] and record == {}
    changes = run_upgrade(tmp_path, cluster, record, "v1.34.2", upgrade_walk=True)
    assert [e[1] for e in cluster.log if e[0] == "snapshot"] == ["pre-upgrade-v1.32.3-to-v1.33.7",
                                                                 "pre-upgrade-v1.33.7-to-v1.34.2"]
    assert [u["to"] for u in record["upgrades"]] == ["v1.33.7", "v1.34.2"]
    assert [c.detail.split(":")[0] for c in changes if c.name == "c-worker-3"] == ["upgraded to v1.33.7",
                                                                                   "upgraded to v1.34.2"]


def test_no_snapshot_is_reported_as_skipped_with_the_reason(tmp_path):
    cluster = Cluster(tmp_path, "v1.33.4")

    class NoSnapshot(StandInDriver):
        async def snapshot(self, ctx, r, name):
            return None, "this cluster keeps no etcd"

    changes = run_upgrade(tmp_path, cluster, {}, "v1.34.1", driver=NoSnapshot(cluster))
    snap = [c for c in changes if c.kind == "etcd-snapshot"]
    assert len(snap) == 1 and snap[0].detail == "skipped: this cluster keeps no etcd"


def test_the_node_must_come_back_at_the_new_version(tmp_path):
    cluster = Cluster(tmp_path, "v1.33.4")

    class KubeletNotRestarted(StandInDriver):
        async def upgrade_node(self, ctx, n, r, version, first):
            return ["nothing"]

    with pytest.raises(StageError, match=r"c-master-1 is not Ready at v1.34.1 after 1s "
                                         r"\(Ready=True, kubelet v1.33.4\)"):
        run_upgrade(tmp_path, cluster, {}, "v1.34.1", driver=KubeletNotRestarted(cluster), ready_timeout=1)


# ------------------------------------------------------------------ the kubeadm driver's commands


class Recorder:
    def __init__(self, answers: dict[str, str]):
        self.answers, self.commands, self.label = answers, [], "node m1"

    async def run(self, command, *, check=True, sudo=False, timeout=None, input=None):
        self.commands.append(command)
        out = next((v for k, v in self.answers.items() if command.startswith(k)), "")
        return Result(0, out, "")


def test_kubeadm_driver_first_control_plane_preinstalled():
    r = Recorder({"kubeadm version": "v1.34.1\n", "kubelet --version": "Kubernetes v1.34.1\n"})
    ctx = SimpleNamespace(progress=lambda *a: None)
    did = asyncio.run(KubeadmUpgrade(KUBECTL, "preinstalled").upgrade_node(ctx, MASTERS[0], r, "v1.34.1", True))
    assert [c.split(" 2>")[0] for c in r.commands] == [
        "kubeadm version -o short", "kubeadm upgrade plan v1.34.1", "kubeadm upgrade apply -y v1.34.1",
        "kubelet --version", "systemctl daemon-reload && systemctl restart kubelet"]
    assert "kubeadm upgrade apply v1.34.1" in did


def test_kubeadm_driver_refuses_unstaged_binaries_naming_the_version():
    r = Recorder({"kubeadm version": "v1.33.4\n"})
    ctx = SimpleNamespace(progress=lambda *a: None)
    with pytest.raises(StageError, match="kubeadm reports 'v1.33.4' and the upgrade needs v1.34.1"):
        asyncio.run(KubeadmUpgrade(KUBECTL, "preinstalled").upgrade_node(ctx, WORKERS[0], r, "v1.34.1", False))
    assert not any("upgrade" in c for c in r.commands)


def test_kubeadm_driver_upstream_switches_the_package_repository_to_the_new_minor():
    r = Recorder({"cat /etc/os-release": "ID=debian\n"})
    ctx = SimpleNamespace(progress=lambda *a: None)
    asyncio.run(KubeadmUpgrade(KUBECTL, "upstream").upgrade_node(ctx, WORKERS[0], r, "v1.34.1", False))
    installs = [c for c in r.commands if "apt-get install" in c]
    assert "core:/stable:/v1.34/deb/" in installs[0] and "kubeadm=1.34.1-*" in installs[0]
    assert "kubelet=1.34.1-*" in installs[1] and "kubectl=1.34.1-*" in installs[1]
    order = [c for c in r.commands if "kubeadm upgrade" in c or "apt-get install" in c or "restart kubelet" in c]
    assert ["kubeadm=" in order[0], order[1], "kubelet=" in order[2], "restart kubelet" in order[3]] == [
        True, "kubeadm upgrade node", True, True]


# ------------------------------------------------------------------ the double's kubeadm version policy


def _double_module():
    spec = importlib.util.spec_from_file_location("kube_double_for_policy", DOUBLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("current,target,kubeadm_v,expected", [
    ("v1.33.4", "v1.34.1", "v1.34.1", None),
    ("v1.32.3", "v1.34.1", "v1.34.1",
     'Specified version to upgrade to "v1.34.1" is too high; kubeadm can upgrade only 1 minor version at a time'),
    ("v1.34.1", "v1.32.0", "v1.34.1",
     'Specified version to downgrade to "v1.32.0" is too low; kubeadm can downgrade only 1 minor version at a time'),
    ("v1.33.4", "v1.34.1", "v1.33.4", "at least one minor release higher than the kubeadm minor release (34 > 33)"),
    ("v1.34.0", "v1.34.2", "v1.34.1", 'is higher than the kubeadm version "v1.34.1". Upgrade kubeadm first'),
])
def test_the_double_enforces_kubeadms_version_policy_with_its_messages(current, target, kubeadm_v, expected):
    mandatory, skippable = _double_module().version_policy(current, target, kubeadm_v, force=False)
    if expected is None:
        assert mandatory == skippable == []
    else:
        assert any(expected in e for e in mandatory + skippable), mandatory + skippable


# ------------------------------------------------------------------ the CLI options


def test_upgrade_options_are_refused_with_another_action_and_passed_with_upgrade(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kubitect_core.cli import app, pipeline_cmds

    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    res = CliRunner().invoke(app, ["apply", "--config", str(tmp_path / "x.yaml"), "--max-unavailable", "2",
                                   "--home", str(tmp_path)], env=env)
    assert res.exit_code != 0 and "--max-unavailable applies only to '--action upgrade'" in res.output
    assert pipeline_cmds._upgrade_flags("upgrade", 3, True) == {"upgrade_max_unavailable": 3, "upgrade_walk": True}
    assert pipeline_cmds._upgrade_flags("create", None, False) == {}


# ------------------------------------------------------------------ snapshots


class Scripted:
    """A Remote whose commands answer from a list of (substring, exit, stdout, stderr), first match wins."""

    def __init__(self, script):
        self.script, self.commands, self.label = script, [], "node m1"

    async def run(self, command, *, check=True, sudo=False, timeout=None, input=None):
        from kubitect_core.remote import RemoteError

        self.commands.append(command)
        code, out, err = next(((c, o, e) for k, c, o, e in self.script if k in command), (0, "", ""))
        if check and code:
            raise RemoteError(f"{self.label}: `{command[:40]}` exited with {code}: {err}")
        return Result(code, out, err)


def test_kubeadm_snapshot_through_the_etcd_helper_or_skipped_when_the_node_has_no_etcd():
    ok = Scripted([("snapshot status", 0, '{"hash": 1, "revision": 9, "totalKey": 42, "totalSize": 4096}', "")])
    assert asyncio.run(up.stacked_etcd_snapshot(ok, "/var/lib/kubitect/s.db")) == ("/var/lib/kubitect/s.db", "")
    assert any("snapshot save" in c for c in ok.commands)
    none = Scripted([("etcdctl", 127, "", "neither etcdctl nor a running etcd container on this node")])
    path, why = asyncio.run(up.stacked_etcd_snapshot(none, "/var/lib/kubitect/s.db"))
    assert path is None and "runs no etcd" in why
    broken = Scripted([("snapshot save", 1, "", "context deadline exceeded")])
    with pytest.raises(StageError, match="snapshot before the upgrade failed, nothing was changed"):
        asyncio.run(up.stacked_etcd_snapshot(broken, "/var/lib/kubitect/s.db"))


def test_k3s_snapshot_is_k3s_own_and_sqlite_clusters_say_why_not():
    from kubitect_plugins.k3s.upgrade import K3sUpgrade

    driver = K3sUpgrade(None, "/usr/local/bin/k3s kubectl", "preinstalled")
    r = Scripted([("ls -1t", 0, "/var/lib/rancher/k3s/server/db/snapshots/pre-x-m1-1700000000\n", "")])
    path, _ = asyncio.run(driver.snapshot(None, r, "pre-x"))
    assert path == "/var/lib/rancher/k3s/server/db/snapshots/pre-x-m1-1700000000"
    assert "k3s etcd-snapshot save --name pre-x" in r.commands
    sqlite = Scripted([("test -d", 1, "", "")])
    path, why = asyncio.run(driver.snapshot(None, sqlite, "pre-x"))
    assert path is None and "SQLite" in why
