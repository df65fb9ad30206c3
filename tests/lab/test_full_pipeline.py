"""The whole pipeline through the real engine and the real plugins, on nspawn nodes in a lab namespace.

network/storage/vms by the nspawn provider, loadbalancers by keepalived-haproxy (real keepalived
and HAProxy), kubernetes by kubeadm, verify by the conformance suite. Only the Kubernetes binaries
are TEST DOUBLES (tests/lab/doubles: they need the internet otherwise): installed on the nodes after
the vms stage, they record their calls and serve /readyz over TLS on 6443, so the load balancers
and verify work through the VIP exactly as they would with a real API server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import tarfile

import nodes_lab
import pytest
import sshd_lab
import yaml
from doubles.install import install_doubles
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core.engine import Engine, Options
from kubitect_core.plugins import load_registry
from kubitect_core.state import ClusterState

NET = "10.88.0"
VIP = f"{NET}.100"
VERSION = "v1.34.2"


def _config(cluster: str) -> dict:
    """Two load balancers with a VIP, one master, one worker: the smallest HA-shaped cluster."""
    return nodes_lab.nspawn_cluster(cluster, NET, {
        "loadBalancer": {"vip": VIP, "instances": [{"id": 1, "ip": f"{NET}.11", "priority": 200},
                                                   {"id": 2, "ip": f"{NET}.12"}]},
        "master": {"instances": [{"id": 1, "ip": f"{NET}.21"}]},
        "worker": {"instances": [{"id": 1, "ip": f"{NET}.31", "labels": {"tier": "app"}}]},
    }, VERSION)


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs("keepalived", "haproxy", "openssl")


def test_apply_then_verify_through_the_vip_then_destroy(rootfs, tmp_path, monkeypatch):
    with sshd_lab.lab_netns("kbt8-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt8-{ns[-6:]}"
        cfg = tmp_path / "cluster.yaml"
        cfg.write_text(yaml.safe_dump(_config(cluster), sort_keys=False))
        home = tmp_path / "home"
        engine = Engine(home, load_registry())
        flags = {"nspawn_rootfs": str(rootfs), "installer_source": "preinstalled", "ready_timeout": 60,
                 "user_kubeconfig": str(tmp_path / "dot-kube" / "config"), "failover": False,
                 # the kubectl double simulates nodes, not pods or DNS: those two checks need a real cluster
                 "checks": "not system_pods_are_ready and not cluster_dns_resolves"}
        state = ClusterState(home, cluster)
        with entered_netns(ns):
            try:
                first = asyncio.run(engine.run_stages(cfg, ["network", "storage", "vms", "loadbalancers"],
                                                      Options(flags=flags)))
                assert [s for s, _, _ in first.stages] == ["validate", "network", "storage", "vms", "loadbalancers"]
                record = state.load_record()
                assert record["stages"]["loadbalancers"]["data"]["endpoint"] == VIP

                loaded = engine.load(cfg)
                k8s_nodes = [n for n in loaded.topology.nodes if n.role != "lb"]
                ssh = engine._ssh(state, loaded, create=False)
                asyncio.run(install_doubles(ssh, k8s_nodes, VERSION))

                outcome = asyncio.run(engine.apply(cfg, Options(flags=flags)))
                assert outcome.skipped == {}
                stages = {name: changes for name, _, changes in outcome.stages}
                assert list(stages) == ["validate", "network", "storage", "vms", "loadbalancers", "kubernetes",
                                        "rook", "verify"]
                assert stages["rook"] == []  # addons.rook is off: the addon stage does nothing
                assert all(c.action == "keep" for n in ("network", "storage", "vms", "loadbalancers")
                           for c in stages[n]), "the second pass over the machine layers changed something"
                assert state.applied_text() is not None

                report = json.loads((state.reports_dir / "conformance.json").read_text())
                outcomes = {c["name"].split("[")[0].split(" ")[0]: c["outcome"] for c in report["cases"]}
                assert report["failed"] == 0, report
                for check in ("test_api_answers_through_the_endpoint", "test_server_certificate_carries_the_vip",
                              "test_every_node_is_ready", "test_exactly_one_vip_holder"):
                    assert outcomes.get(check) == "passed", (check, outcomes)
                kubeconfig = yaml.safe_load(state.kubeconfig_path.read_text())
                assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{VIP}:6443"
                assert state.kubeconfig_path.stat().st_mode & 0o777 == 0o600

                _check_the_run_log(state, engine, tmp_path)
                _check_status_and_ssh(state, engine)

                again = asyncio.run(engine.apply(cfg, Options(flags=flags)))
                assert again.nothing_to_do and again.message == "No changes detected."
            finally:
                asyncio.run(engine.destroy(cluster, Options(flags=flags)))
        assert not state.exists()
        leftovers = sshd_lab.run("ip", "-n", ns, "-o", "link", "show", check=False).stdout
        assert f"kb{cluster[-6:]}" not in leftovers


def _check_the_run_log(state: ClusterState, engine: Engine, tmp_path) -> None:
    """The apply's run log says what ran on each node (exit status, output, timing), holds none of
    the cluster's secrets, and `kubitect export logs` bundles it."""
    log = engine.log_path
    assert log is not None and log.parent == state.dir / "logs" and log.name.endswith("-apply.log")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    topology = engine.load(state.config_path).topology
    for node in topology.nodes:
        ran = re.findall(rf"\[(\w+)\] node {re.escape(node.name)} \({re.escape(node.ip)}\) = exit (\d+) after "
                         rf"([0-9.]+) s: (.*)", text)
        assert ran, f"nothing logged for {node.name}"
        stages = {stage for stage, *_ in ran}
        assert ("loadbalancers" if node.role == "lb" else "kubernetes") in stages, (node.name, stages)
    master = next(n for n in topology.nodes if n.role == "master")
    init = re.search(rf"node {re.escape(master.name)} \S+ = exit 0 after [0-9.]+ s: kubeadm init", text)
    assert init, "kubeadm init on the first master, with its exit status"
    worker = next(n for n in topology.nodes if n.role == "worker")
    assert re.search(rf"node {re.escape(worker.name)} \S+ \$ kubeadm join --config \S+   \(sudo\)", text)
    assert "    stdout | " in text, "command output is kept"
    secrets = json.loads((state.dir / "secrets" / "kubeadm.json").read_text())
    for name in ("token", "certificate_key"):
        assert secrets[name] and secrets[name] not in text, f"the kubeadm {name} is in the run log"

    bundle = tmp_path / "logs.tar.gz"
    env = {**os.environ, "KUBITECT_HOME": str(engine.home)}
    proc = subprocess.run([sys.executable, "-m", "kubitect_core.cli", "export", "logs", "--cluster", state.name,
                           "--file", str(bundle)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    with tarfile.open(bundle) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers()}
        # the engine alone (no CLI) keeps no events.jsonl: the bundle holds the two run logs
        assert sorted(members) == sorted(f"logs/{p.name}" for p in (state.dir / "logs").iterdir())
        assert f"logs/{log.name}" in members and any(name.endswith("-run.log") for name in members)
        bundled = b"".join(tar.extractfile(m).read() for m in members.values()).decode()
    assert all(secrets[name] not in bundled for name in ("token", "certificate_key"))


def _kubitect(engine: Engine, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBITECT_HOME": str(engine.home)}
    return subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def _check_status_and_ssh(state: ClusterState, engine: Engine) -> None:
    """`kubitect status` sees every node, the VIP on the priority-200 load balancer, Kubernetes's
    readiness (the kubectl double on the master) and the verify that just ran; `kubitect ssh`
    reaches a node through the cluster's key and pinned host key."""
    proc = _kubitect(engine, "status", "--cluster", state.name, "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    topology = engine.load(state.config_path).topology
    assert {n["name"]: n["state"] for n in doc["nodes"]} == {n.name: "reachable" for n in topology.nodes}
    assert doc["vip"] == VIP and doc["vip_holders"] == [f"{state.name}-lb-1"]
    k8s = doc["kubernetes"]
    assert k8s["error"] is None and k8s["asked"] == f"{state.name}-master-1"
    assert k8s["nodes"] == {n.name: "Ready" for n in topology.nodes if n.role != "lb"}
    assert doc["last_verify"]["failed"] == 0 and doc["last_verify"]["age_seconds"] < 900
    worker = f"{state.name}-worker-1"
    ssh = _kubitect(engine, "ssh", "--cluster", state.name, "worker-1", "--", "hostname")
    assert (ssh.returncode, ssh.stdout.strip()) == (0, worker), ssh.stderr
