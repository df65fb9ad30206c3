"""`kubitect apply --action upgrade` through the real engine on nspawn nodes, with a prober on the VIP.

Real: the engine (change rules, lock, stages, record), five systemd-nspawn nodes on a bridge in a
private network namespace (one load balancer with real keepalived and HAProxy holding the VIP,
three masters, one worker), sshd, systemd units, the installer's SSH commands and their order, the
upgrade orchestration (preflight, lock, checkpoints, drain/uncordon, waits), the prober's TLS
requests to /readyz through the VIP and HAProxy's health checks.

TEST DOUBLES (the real binaries need the internet): kubeadm, kubelet, kubectl
(tests/lab/doubles/kube_double.py). They keep the installed version (what a package upgrade
changes; `stage_version` stands in for that) apart from the running one: `kubeadm upgrade apply`
enforces kubeadm's version policy and restarts the node's stand-in API server at the new version,
a kubelet reports its version to the API only when its unit is restarted. No etcd runs here: the
snapshot step reports why it was skipped, or takes one through kubitect_core.kube.etcd when this
build has it and etcd answers.

Budget: one lab for both tests (module scope); about 90 s on a quiet 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import time

import nodes_lab
import pytest
import sshd_lab
import yaml
from doubles.install import install_doubles, stage_version
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core import remote
from kubitect_core.engine import Engine, Options
from kubitect_core.failover import Prober
from kubitect_core.plugins import load_registry
from kubitect_core.state import ClusterState

pytestmark = pytest.mark.lab

NET = "10.91.0"
VIP = f"{NET}.100"
V1, V2, V3 = "v1.33.5", "v1.34.2", "v1.35.1"


def _config(cluster: str, version: str) -> dict:
    return nodes_lab.nspawn_cluster(cluster, NET, {
        "loadBalancer": {"vip": VIP, "instances": [{"id": 1, "ip": f"{NET}.11"}]},
        "master": {"instances": [{"id": i, "ip": f"{NET}.2{i}"} for i in (1, 2, 3)]},
        "worker": {"instances": [{"id": 1, "ip": f"{NET}.31"}]},
    }, version)


class UpgradeLab:
    def __init__(self, ns, tmp, rootfs):
        self.ns, self.tmp = ns, tmp
        self.cluster = f"kbup-{ns[-6:]}"
        self.cfg = tmp / "cluster.yaml"
        self.home = tmp / "home"
        self.engine = Engine(self.home, load_registry())
        self.state = ClusterState(self.home, self.cluster)
        self.flags = {"nspawn_rootfs": str(rootfs), "installer_source": "preinstalled", "ready_timeout": 60,
                      "user_kubeconfig": str(tmp / "dot-kube" / "config"), "failover": False,
                      "checks": "test_every_node_is_ready or test_api_answers_through_the_endpoint"}

    def write(self, version: str) -> None:
        self.cfg.write_text(yaml.safe_dump(_config(self.cluster, version), sort_keys=False))

    @property
    def k8s_nodes(self):
        return [n for n in self.engine.load(self.cfg).topology.nodes if n.role != "lb"]

    def ssh(self):
        return self.engine._ssh(self.state, self.engine.load(self.cfg), create=False)

    async def run(self, node, cmd: str) -> str:
        ssh = self.ssh()
        async with await remote.connect(node.ip, user="k8s", key=ssh.private_key, known_hosts=ssh.known_hosts,
                                        name=node.name) as r:
            return (await r.run(cmd, sudo=True, check=False, timeout=60)).stdout

    async def calls(self) -> list[dict]:
        out = []
        for n in self.k8s_nodes:
            text = await self.run(n, "cat /var/log/kubitect-doubles/calls.jsonl 2>/dev/null || true")
            out += [json.loads(line) for line in text.splitlines() if line.strip()]
        return sorted(out, key=lambda c: c["t"])

    async def upgrade_with_prober(self, version: str, **flags):
        """apply --action upgrade while a prober hits /readyz through the VIP every 50 ms."""
        self.write(version)
        opts = Options(action="upgrade", auto_approve=True, flags={**self.flags, **flags})
        async with Prober(VIP, interval=0.05) as prober:
            await prober.wait_ready(10)
            t0 = time.monotonic()
            try:
                outcome = await self.engine.apply(self.cfg, opts)
            finally:
                seconds = time.monotonic() - t0
                result = prober.result()
        return outcome, seconds, result


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    rootfs = nodes_lab.nspawn_rootfs("keepalived", "haproxy", "openssl")
    mp = pytest.MonkeyPatch()
    with sshd_lab.lab_netns("kbup-") as ns:
        mp.setenv(LAB_MARK_ENV, ns)
        the_lab = UpgradeLab(ns, tmp_path_factory.mktemp("kbup"), rootfs)
        the_lab.write(V1)
        try:
            with entered_netns(ns):
                t0 = time.monotonic()
                asyncio.run(the_lab.engine.run_stages(the_lab.cfg, ["network", "storage", "vms", "loadbalancers"],
                                                      Options(flags=the_lab.flags)))
                asyncio.run(install_doubles(the_lab.ssh(), the_lab.k8s_nodes, V1, kubelet_service=True))
                created = asyncio.run(the_lab.engine.apply(the_lab.cfg, Options(flags=the_lab.flags)))
                assert created.skipped == {}
                print(f"\nlab cluster at {V1} in {time.monotonic() - t0:.1f}s")
            yield the_lab
        finally:
            if the_lab.state.exists():
                with entered_netns(ns):
                    asyncio.run(the_lab.engine.destroy(the_lab.cluster, Options(flags=the_lab.flags)))
            mp.undo()


def _kubeadm_upgrades(calls):
    return [(c["host"], c["argv"][1], c.get("rc")) for c in calls
            if c["tool"] == "kubeadm" and c["argv"][:1] == ["upgrade"] and c.get("phase") == "end"]


def test_upgrade_one_minor_in_order_with_the_vip_answering(lab):
    m1, m2, m3, w1 = lab.k8s_nodes
    with entered_netns(lab.ns):
        asyncio.run(stage_version(lab.ssh(), lab.k8s_nodes, V2))  # the new packages, not yet running
        outcome, seconds, probes = asyncio.run(lab.upgrade_with_prober(V2))
        calls = asyncio.run(lab.calls())
        again = asyncio.run(lab.engine.apply(lab.cfg, Options(action="upgrade", flags=lab.flags)))
    print(f"\nkubeadm upgrade {V1} -> {V2} (3 masters, 1 worker): {seconds:.1f}s; requests through the VIP: "
          f"{probes.probes} sent, {probes.failures} failed")
    kube = {name: changes for name, _, changes in outcome.stages}["kubernetes"]
    upgraded = [c.name for c in kube if c.kind == "node" and c.action == "change"]
    assert upgraded == [m1.name, m2.name, m3.name, w1.name]
    snap = [c for c in kube if c.kind == "etcd-snapshot"]
    assert len(snap) == 1 and (snap[0].detail.startswith("skipped: ") or "0600" in snap[0].detail), snap

    # kubeadm upgrade apply on the first master, `upgrade node` on the others, one node at a time
    assert _kubeadm_upgrades(calls) == [(m1.name, "plan", 0), (m1.name, "apply", 0), (m2.name, "node", 0),
                                        (m3.name, "node", 0), (w1.name, "node", 0)]
    # per node: cordon, drain, kubeadm, kubelet restarted (it reports itself), uncordon, in that order
    for n in (m1, m2, m3, w1):
        steps = []
        for c in calls:
            if c["tool"] == "kubectl" and c["argv"][-1:] == [n.name] and c["argv"][-2] in ("cordon", "uncordon"):
                steps.append(c["argv"][-2])
            elif c["tool"] == "kubectl" and "drain" in c["argv"] and n.name in c["argv"]:
                steps.append("drain")
            elif c["tool"] == "kubeadm" and c["host"] == n.name and c["argv"][:1] == ["upgrade"] \
                    and c.get("phase") != "end" and c["argv"][1] != "plan":
                steps.append("kubeadm upgrade")
            elif c["tool"] == "kubelet" and c["host"] == n.name and c["argv"] == ["--kubitect-double-run"]:
                steps.append("kubelet started")
        assert steps == ["cordon", "drain", "kubeadm upgrade", "kubelet started", "uncordon"], (n.name, steps)
    starts = {n.name: next(c["t"] for c in calls if c["tool"] == "kubectl" and c["argv"][-2:] == ["cordon", n.name])
              for n in (m1, m2, m3, w1)}
    backs = {n.name: next(c["t"] for c in calls if c["tool"] == "kubectl" and c["argv"][-2:] == ["uncordon", n.name])
             for n in (m1, m2, m3, w1)}
    assert starts[m2.name] > backs[m1.name] and starts[m3.name] > backs[m2.name] and starts[w1.name] > backs[m3.name]

    # the cluster runs the new version everywhere; nothing left cordoned; the lock is released
    with entered_netns(lab.ns):
        nodes = json.loads(asyncio.run(lab.run(m1, "kubectl get nodes -o json")))
        lock = asyncio.run(lab.run(m1, "ls /var/lib/kubitect/upgrade.lock 2>&1"))
        served = asyncio.run(lab.run(m2, "kubectl get --raw /version"))
    assert {i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"] for i in nodes["items"]} == \
        {n.name: V2 for n in (m1, m2, m3, w1)}
    assert not any(i["spec"].get("unschedulable") for i in nodes["items"])
    assert json.loads(served)["gitVersion"] == V2 and "No such file" in lock
    record = lab.state.load_record()["stages"]["kubernetes"]["data"]
    assert "upgrade" not in record and record["upgrades"][-1]["to"] == V2
    assert again.nothing_to_do  # the same config again: nothing to upgrade
    assert probes.failures == 0, f"{probes.failures} of {probes.probes} requests through the VIP failed"


def test_a_failed_upgrade_resumes_at_the_node_where_it_stopped(lab):
    m1, m2, m3, w1 = lab.k8s_nodes
    with entered_netns(lab.ns):
        asyncio.run(stage_version(lab.ssh(), lab.k8s_nodes, V3))
        asyncio.run(lab.run(m2, "rm -f /var/log/kubitect-doubles/calls.jsonl; "
                                "touch /etc/kubitect-doubles/fail-upgrade-once"))
        for n in (m1, m3, w1):
            asyncio.run(lab.run(n, "rm -f /var/log/kubitect-doubles/calls.jsonl"))
        with pytest.raises(Exception, match="failed once, as the test asked"):
            asyncio.run(lab.upgrade_with_prober(V3))
        stopped = lab.state.load_record()["stages"]["kubernetes"]["data"]["upgrade"]
        t0 = time.monotonic()
        outcome, seconds, probes = asyncio.run(lab.upgrade_with_prober(V3))
        calls = asyncio.run(lab.calls())
    print(f"\nresumed upgrade to {V3} finished in {seconds:.1f}s; requests through the VIP: {probes.probes} sent, "
          f"{probes.failures} failed")
    assert stopped["done"] == [m1.name] and stopped["current"] == [m2.name]
    kube = {name: changes for name, _, changes in outcome.stages}["kubernetes"]
    assert [c.name for c in kube if c.kind == "node" and c.action == "change"] == [m2.name, m3.name, w1.name]
    assert not [c for c in kube if c.kind == "etcd-snapshot"]  # taken before the failure, not again
    # the first master was upgraded exactly once; the second failed once, then finished
    assert _kubeadm_upgrades(calls) == [(m1.name, "plan", 0), (m1.name, "apply", 0), (m2.name, "node", 1),
                                        (m2.name, "node", 0), (m3.name, "node", 0), (w1.name, "node", 0)]
    assert time.monotonic() - t0 < 120
    assert probes.failures == 0
