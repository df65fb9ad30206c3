"""Control planes on day 2: add, remove, replace a master, back up and restore, through the real engine.

What is REAL here: nspawn nodes in a lab network namespace, sshd, keepalived and HAProxy holding
the VIP, the engine and every plugin, and **etcd** (Debian's etcd-server 3.4 on each master, with
TLS from an etcd CA at kubeadm's paths; etcdctl from etcd-client): member add on a control-plane
join, member remove, quorum, snapshot save/status, snapshot restore and the members rejoining
are etcd's own behaviour, and the keys this test writes live in that etcd.

What is a TEST DOUBLE (tests/lab/doubles/kube_double.py; the real binaries need the internet):
kubeadm, kubelet, kubectl. The kubeadm double drives the real etcd the way kubeadm does (init:
a one-member cluster from a static-pod manifest; control-plane join: `member add` then start;
reset: `member remove`), and a kubelet stand-in runs etcd from /etc/kubernetes/manifests/etcd.yaml,
so parking that manifest stops etcd as it would for real. The API servers behind the VIP are the
double's, which keep no state in etcd: the prober through the VIP measures the load balancers
and API server membership, not a real API server's dependence on etcd.

One lab for the module (1 load balancer with the VIP, masters 1-3; 4 and 5 added and removed).
Each test prints the requests that failed through the VIP while it ran, and its wall time.
"""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
from pathlib import Path

import nodes_lab
import pytest
import sshd_lab
import yaml
from doubles.install import install_doubles
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core import remote
from kubitect_core.backup import backup, restore
from kubitect_core.engine import Engine, Options, StageFailed
from kubitect_core.failover import Prober
from kubitect_core.hookspecs import hookimpl
from kubitect_core.kube import etcd
from kubitect_core.plugins import load_registry
from kubitect_core.replace import replace_node
from kubitect_core.state import ClusterState

pytestmark = pytest.mark.lab

NET = "10.77.0"
VIP = f"{NET}.100"
VERSION = "v1.34.2"


def _config(cluster: str, masters: tuple[int, ...]) -> dict:
    return nodes_lab.nspawn_cluster(cluster, NET, {
        "loadBalancer": {"vip": VIP, "instances": [{"id": 1, "ip": f"{NET}.11"}]},
        "master": {"instances": [{"id": i, "ip": f"{NET}.2{i}"} for i in masters]},
    }, VERSION)


class VipProber:
    """The prober through the VIP in its own thread and event loop (the engine's work never delays it)."""

    def __init__(self) -> None:
        self.prober = Prober(VIP, interval=0.05, timeout=2.0)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.prober.start()
        await self.prober.wait_ready(20)
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        await self.prober.stop()

    def __enter__(self) -> VipProber:
        self.t0 = time.monotonic()
        self._thread.start()  # started inside the lab namespace: the thread inherits it
        assert self._ready.wait(25), "the VIP never answered"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)
        self.seconds = time.monotonic() - self.t0
        probes = self.prober.probes
        self.sent, self.failed = len(probes), sum(not p.ok for p in probes)
        print(f"\n  through the VIP: {self.failed} of {self.sent} requests failed; wall time {self.seconds:.1f}s")


class DoublesOnNewMachines:
    """Test plugin: when the vms stage has made machines, the kube doubles go on the new masters
    (in a user's cluster the real binaries come with the node image or the installer)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    @hookimpl
    def kubitect_stage_finished(self, stage: str, action: str, ok: bool) -> None:
        if stage == "vms" and action == "apply" and ok:  # the thread inherits the lab namespace
            worker = threading.Thread(target=lambda: asyncio.run(self.lab.install_missing_doubles()))
            worker.start()
            worker.join(120)


class Lab:
    def __init__(self, ns: str, tmp: Path, rootfs: Path):
        self.ns, self.tmp = ns, tmp
        self.cluster = f"kbcp-{ns[-6:]}"
        self.home = tmp / "home"
        registry = load_registry()
        registry.pm.register(DoublesOnNewMachines(self), name="kube-doubles-on-new-machines")
        self.engine = Engine(self.home, registry)
        self.state = ClusterState(self.home, self.cluster)
        self.flags = {"nspawn_rootfs": str(rootfs), "installer_source": "preinstalled", "ready_timeout": 60,
                      "user_kubeconfig": str(tmp / "dot-kube" / "config"), "failover": False,
                      "checks": "not system_pods_are_ready and not cluster_dns_resolves"}

    def write(self, masters: tuple[int, ...]) -> Path:
        path = self.tmp / f"cluster-{len(masters)}.yaml"
        path.write_text(yaml.safe_dump(_config(self.cluster, masters), sort_keys=False))
        return path

    def opts(self, action: str = "create") -> Options:
        return Options(action=action, flags=dict(self.flags))

    async def converge(self, masters: tuple[int, ...], action: str = "create"):
        """What a user's `kubitect apply` does (the doubles go on new machines when the vms stage ends)."""
        return await self.engine.apply(self.write(masters), self.opts(action))

    async def install_missing_doubles(self) -> None:
        loaded = self.engine.load_raw(self.state.config_text(), "config")
        ssh = self.engine._ssh(self.state, loaded, create=False)
        fresh = []
        for n in loaded.topology.masters:
            try:
                if not await asyncio.wait_for(self._has_doubles(n), 20):
                    fresh.append(n)
            except (OSError, TimeoutError, remote.RemoteError):
                pass  # no machine there (yet): the replace deletes one before it makes it again
        await install_doubles(ssh, fresh, VERSION)

    async def _has_doubles(self, node) -> bool:
        out = await self.sh(node.ip, "test -x /usr/local/lib/kubitect-doubles/kube_double.py && echo y", check=False)
        return out.strip() == "y"

    def master_ip(self, i: int) -> str:
        return f"{NET}.2{i}"

    def name(self, i: int) -> str:
        return f"{self.cluster}-master-{i}"

    async def sh(self, ip: str, cmd: str, check: bool = True) -> str:
        key = self.state.ssh_dir / "id_ed25519"
        async with await remote.connect(ip, user="k8s", key=key, known_hosts=self.state.ssh_dir / "known_hosts") as r:
            return (await r.run(cmd, sudo=True, check=check, timeout=60)).stdout

    async def on(self, ip: str, fn):
        key = self.state.ssh_dir / "id_ed25519"
        async with await remote.connect(ip, user="k8s", key=key, known_hosts=self.state.ssh_dir / "known_hosts") as r:
            return await fn(r)

    async def members(self, ip: str) -> list[str]:
        """etcd's member list, asked of the REAL etcd on that master."""
        return sorted(m.name for m in await self.on(ip, etcd.member_list))

    async def quorum(self, ip: str) -> etcd.Quorum:
        return await self.on(ip, etcd.endpoint_health)

    def secrets(self) -> dict:
        return json.loads((self.state.dir / "secrets" / "kubeadm.json").read_text())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    rootfs = nodes_lab.nspawn_rootfs("keepalived", "haproxy", "openssl")
    if not (rootfs / "usr/bin/etcd").exists():
        pytest.fail(f"the lab node image {rootfs} has no etcd: kubitect_core/images/rootfs.py must install etcd-server")
    mp = pytest.MonkeyPatch()
    with sshd_lab.lab_netns("kbcp-") as ns:
        mp.setenv(LAB_MARK_ENV, ns)
        the_lab = Lab(ns, tmp_path_factory.mktemp("kbcp"), rootfs)
        try:
            with entered_netns(ns):
                t0 = time.monotonic()
                outcome = asyncio.run(the_lab.converge((1, 2, 3)))
                assert outcome.skipped == {}, outcome.skipped
                print(f"\nlab: 1 LB + 3 masters (real etcd) applied in {time.monotonic() - t0:.1f}s")
                yield the_lab
        finally:
            with entered_netns(ns):
                asyncio.run(the_lab.engine.destroy(the_lab.cluster, Options(flags=dict(the_lab.flags))))
            mp.undo()


def test_three_masters_form_one_real_etcd_cluster(lab):
    with entered_netns(lab.ns):
        names = asyncio.run(lab.members(lab.master_ip(1)))
        q = asyncio.run(lab.quorum(lab.master_ip(3)))
    assert names == [lab.name(i) for i in (1, 2, 3)]
    assert (q.members, q.healthy, q.needed) == (3, 3, 2)


def test_replace_a_failed_master_and_refuse_what_would_lose_quorum(lab):
    with entered_netns(lab.ns):
        # master-3 fails: its etcd and API server stop (the machine stays, broken)
        asyncio.run(lab.sh(lab.master_ip(3), "mv /etc/kubernetes/manifests/etcd.yaml /root/ && "
                                             "systemctl stop kubitect-double-apiserver"))
        deadline = time.monotonic() + 20
        while (q := asyncio.run(lab.quorum(lab.master_ip(1)))).healthy != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (q.members, q.healthy, q.needed) == (3, 2, 2), q
        # replacing a HEALTHY master now would leave 1 healthy of 2: refused with the numbers, nothing touched
        with pytest.raises(StageFailed) as refused:
            asyncio.run(replace_node(lab.engine, lab.cluster, "master-2", lab.opts()))
        assert "members 3, healthy 2, needed 2" in str(refused.value)
        assert "after members 2, healthy 1, needed 2" in str(refused.value)
        assert asyncio.run(lab.members(lab.master_ip(1))) == [lab.name(i) for i in (1, 2, 3)]
        old_key = lab.secrets()["certificate_key"]
        with VipProber() as probe:
            outcome = asyncio.run(replace_node(lab.engine, lab.cluster, "master-3", lab.opts()))
        assert outcome.skipped == {}
        names = asyncio.run(lab.members(lab.master_ip(1)))
        q = asyncio.run(lab.quorum(lab.master_ip(1)))
        still_there = asyncio.run(lab.sh(lab.master_ip(3), "ls /root/etcd.yaml 2>&1 || true"))
    first = outcome.stages[0]
    assert first[0] == "replace"
    assert [(c.kind, c.name) for c in first[2]] == [("etcd-member", lab.name(3)), ("node", lab.name(3))]
    assert first[2][0].detail.startswith(f"before: members 3, healthy 2, needed 2 (unhealthy: {lab.name(3)}); "
                                         "after: members 2, healthy 2, needed 2")
    assert names == [lab.name(i) for i in (1, 2, 3)] and (q.members, q.healthy) == (3, 3)
    assert "No such file" in still_there, "master-3's machine was not rebuilt"
    assert lab.secrets()["certificate_key"] != old_key
    assert probe.failed == 0


def test_backup_then_restore_brings_etcd_back_to_the_snapshot(lab):
    put = "put /kubitect-test/{0} {1}"
    with entered_netns(lab.ns):
        m1 = lab.master_ip(1)
        asyncio.run(lab.on(m1, lambda r: etcd.etcdctl(r, put.format("before", "written-before-the-backup"))))
        target = lab.tmp / "backups" / "cp.tar.gz"
        with VipProber() as during_backup:
            info = asyncio.run(backup(lab.engine, lab.cluster, target, lab.opts()))
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert info.manifest["etcd"]["totalKey"] > 0 and info.manifest["etcd"]["members"] == 3
        with pytest.raises(Exception, match="exists"):
            asyncio.run(backup(lab.engine, lab.cluster, target, lab.opts()))
        asyncio.run(lab.on(m1, lambda r: etcd.etcdctl(r, put.format("after", "written-after-the-backup"))))
        with VipProber() as during_restore:
            done = asyncio.run(restore(lab.engine, lab.cluster, target, lab.opts()))
        get = "get /kubitect-test/{} --print-value-only"
        before = asyncio.run(lab.on(lab.master_ip(2), lambda r: etcd.etcdctl(r, get.format("before"))))
        after = asyncio.run(lab.on(lab.master_ip(3), lambda r: etcd.etcdctl(r, get.format("after"))))
        names = asyncio.run(lab.members(m1))
        q = asyncio.run(lab.quorum(m1))
    print("\n  " + "\n  ".join(done))
    assert before.strip() == "written-before-the-backup"
    assert after.strip() == "", "a key written after the backup survived the restore"
    assert names == [lab.name(i) for i in (1, 2, 3)] and (q.members, q.healthy) == (3, 3)
    assert during_backup.failed == 0
    print(f"  restore: {during_restore.failed} requests failed through the VIP (the API servers are doubles "
          "that keep no state in etcd, so they stay up)")


def test_add_two_masters_with_a_fresh_certificate_key(lab):
    before = lab.secrets()["certificate_key"]
    with entered_netns(lab.ns), VipProber() as probe:
        outcome = asyncio.run(lab.converge((1, 2, 3, 4, 5), action="scale"))
    assert outcome.skipped == {}
    with entered_netns(lab.ns):
        names = asyncio.run(lab.members(lab.master_ip(1)))
        q = asyncio.run(lab.quorum(lab.master_ip(1)))
        joins = [json.loads(line) for line in asyncio.run(lab.sh(
            lab.master_ip(5), "cat /var/log/kubitect-doubles/calls.jsonl")).splitlines()]
    assert names == [lab.name(i) for i in (1, 2, 3, 4, 5)]
    assert (q.members, q.healthy, q.needed) == (5, 5, 3)
    after = lab.secrets()["certificate_key"]
    assert after != before, "control planes joining later must get a fresh certificate key"
    join = next(c for c in joins if c["tool"] == "kubeadm" and c["argv"][:1] == ["join"] and "config" in c)
    assert after in join["config"] and before not in join["config"]
    assert probe.failed == 0


def test_remove_two_masters_takes_their_etcd_members_out_first(lab):
    with entered_netns(lab.ns), VipProber() as probe:
        outcome = asyncio.run(lab.converge((1, 2, 3), action="scale"))
    stages = {name: changes for name, _, changes in outcome.stages}
    etcd_changes = [c for c in stages.get("remove-nodes", []) if c.kind == "etcd-member"]
    assert [c.name for c in etcd_changes] == [lab.name(4), lab.name(5)], stages.get("remove-nodes")
    assert "before: members 5, healthy 5, needed 3; after: members 4, healthy 4, needed 3" in etcd_changes[0].detail
    assert "after: members 3, healthy 3, needed 2" in etcd_changes[1].detail
    with entered_netns(lab.ns):
        names = asyncio.run(lab.members(lab.master_ip(2)))
        q = asyncio.run(lab.quorum(lab.master_ip(2)))
    assert names == [lab.name(i) for i in (1, 2, 3)]
    assert (q.members, q.healthy) == (3, 3)
    assert probe.failed == 0
