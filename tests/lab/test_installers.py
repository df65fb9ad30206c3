"""The kubeadm and k3s installers against real lab nodes whose Kubernetes binaries are TEST DOUBLES.

Real: five systemd-nspawn nodes (3 masters, 2 workers) booted by the nspawn provider on a
bridge inside a private network namespace, real sshd, the plugins' SSH commands, systemd units
(k3s runs as a real systemd service), files and modes on the nodes. Doubles (the real binaries
need the internet): kubeadm, kubelet, kubectl, k3s, containerd, modprobe and sysctl are
`tests/lab/doubles/kube_double.py`, which records each call and serves /readyz over TLS on 6443
on the masters. The first server checks the bootstrap token, the CA hash and the certificate key
of every join and refuses wrong ones, so a passing join proves the parameters.

The VIP of the seed-like config is put on the first master's interface as a stand-in for the
loadbalancers stage (tested on its own in test_lb_failover.py): joins go through the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import shlex
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import nodes_lab
import pytest
import sshd_lab
import yaml
from doubles.install import install_doubles
from kubitect_plugins.k3s import K3sInstaller
from kubitect_plugins.kubeadm import KubeadmInstaller
from kubitect_plugins.nspawn import NspawnProvider
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core import remote
from kubitect_core.config import validate_raw
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.remote import RemoteError
from kubitect_core.stage import StageError

pytestmark = pytest.mark.lab

NET = "10.66.0"
VIP = f"{NET}.100"
OTHER_CLUSTER = {
    "apiVersion": "v1", "kind": "Config", "current-context": "prod", "preferences": {},
    "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
    "users": [{"name": "prod", "user": {"token": "prod-token"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
}


def lab_raw(cluster: str, manager: str) -> dict:
    """A seed-shaped config (VIP, 2 LBs, 3 masters, 2 workers) on the lab network."""
    return {
        "hosts": [{"name": "lab", "connection": {"type": "local"}, "provider": "nspawn"}],
        "cluster": {
            "name": cluster,
            "network": {"mode": "bridge", "cidr": f"{NET}.0/24", "bridge": "kbr-kbt6"},
            "nodeTemplate": {"user": "k8s", "os": {"distro": "debian12", "networkInterface": "host0"}},
            "nodes": {
                "loadBalancer": {"vip": VIP, "instances": [{"id": 1, "ip": f"{NET}.11"}, {"id": 2, "ip": f"{NET}.12"}]},
                "master": {"instances": [{"id": i, "ip": f"{NET}.2{i}"} for i in (1, 2, 3)]},
                "worker": {"default": {"labels": {"tier": "app", "node-role.kubernetes.io/worker": ""}},
                           "instances": [{"id": i, "ip": f"{NET}.3{i}"} for i in (1, 2)]},
            },
        },
        "kubernetes": {"version": "v1.34.2", "manager": manager,
                       "other": {"mergeKubeconfig": True, "autoRenewCertificates": True}},
    }


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs()


class Lab:
    """Five nspawn nodes in one namespace, a cluster dir with its SSH key, helpers to read nodes."""

    def __init__(self, ns: str, tmp: Path, rootfs: Path):
        self.ns = ns
        self.cluster = f"kbt6-{ns[-6:]}"
        self.home = tmp / "home"
        self.cdir = self.home / "clusters" / self.cluster
        key = self.cdir / "ssh" / "id_ed25519"
        sshd_lab.write_keypair(key, comment=self.cluster)
        self.ssh = SshAccess("k8s", key, Path(f"{key}.pub"), self.cdir / "ssh" / "known_hosts")
        self.rootfs = rootfs
        self.records = {"network": {}, "storage": {}, "vms": {}}
        self.provider = NspawnProvider()
        self.user_kubeconfig = tmp / "dot-kube" / "config"

    def ctx(self, manager: str, record: dict, layer: str | None = None) -> StageContext:
        loaded = validate_raw(lab_raw(self.cluster, manager))
        topo = loaded.topology
        if layer:  # the provider boots only the Kubernetes nodes; the VIP stands in for the LBs
            topo = replace(topo, nodes=tuple(n for n in topo.nodes if n.role != "lb"))
        return StageContext(
            cluster=self.cluster, config=loaded.config, topology=topo, cluster_dir=self.cdir, home=self.home,
            ssh=self.ssh, record=record, facts={"loadbalancers": {"endpoint": VIP, "vip": VIP}},
            options={"nspawn_rootfs": str(self.rootfs), "installer_source": "preinstalled", "ready_timeout": 30,
                     "user_kubeconfig": str(self.user_kubeconfig)},
        )

    async def boot(self) -> None:
        for layer in ("network", "storage", "vms"):
            await getattr(self.provider, layer).apply(self.ctx("kubeadm", self.records[layer], layer), ["lab"])

    async def down(self) -> None:
        for layer in ("vms", "storage", "network"):
            await getattr(self.provider, layer).destroy(self.ctx("kubeadm", self.records[layer], layer), ["lab"])

    async def run(self, ip: str, cmd: str, check: bool = True) -> str:
        async with await remote.connect(ip, user="k8s", key=self.ssh.private_key,
                                        known_hosts=self.ssh.known_hosts) as node:
            return (await node.run(cmd, sudo=True, check=check, timeout=60)).stdout

    async def install_doubles(self, version: str, nodes) -> None:
        """Puts the TEST DOUBLE on every node under the tools' names (fresh call log each time)."""
        await install_doubles(self.ssh, nodes, version)

    async def calls(self, nodes) -> list[dict]:
        out = []
        for n in nodes:
            text = await self.run(n.ip, "cat /var/log/kubitect-doubles/calls.jsonl 2>/dev/null || true")
            out += [json.loads(line) for line in text.splitlines() if line.strip()]
        return sorted(out, key=lambda c: c["t"])

    async def registered(self, first_ip: str) -> dict:
        return json.loads(await self.run(first_ip, "cat /var/lib/kubitect-doubles/nodes.json"))


@pytest.fixture(scope="module")
def lab(rootfs, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    with sshd_lab.lab_netns("kbt6-") as ns:
        mp.setenv(LAB_MARK_ENV, ns)  # every process started here is swept with the namespace
        the_lab = Lab(ns, tmp_path_factory.mktemp("kbt6"), rootfs)
        try:
            with entered_netns(ns):
                started = time.monotonic()
                asyncio.run(the_lab.boot())
                print(f"\n5 nspawn nodes up in {time.monotonic() - started:.1f}s")
                masters = the_lab.ctx("kubeadm", {}).topology.masters
                # stand-in for the loadbalancers stage: the VIP answers on the first master
                asyncio.run(the_lab.run(masters[0].ip, f"ip addr add {VIP}/24 dev host0"))
            yield the_lab
        finally:
            with entered_netns(ns):
                asyncio.run(the_lab.down())
            mp.undo()


def _spki_hash_with_openssl(pem: bytes) -> str:
    """The discovery hash computed independently of the plugin (openssl on this machine)."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=pem, capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _readyz(ip: str) -> str:
    res = subprocess.run(["curl", "-ksS", "--max-time", "3", f"https://{ip}:6443/readyz"], capture_output=True,
                         text=True)
    return res.stdout.strip()


def _served_sans(ip: str) -> list[str]:
    """IP SANs of the certificate served at ip:6443 (what verify checks through the VIP)."""
    pem = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:6443"], input="", capture_output=True,
                         text=True, timeout=10).stdout
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem, capture_output=True,
                         text=True).stdout
    return re.findall(r"IP Address:([0-9a-fA-F.:]+)", out)


def _field(text: str, name: str) -> str | None:
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        stack = [doc]
        while stack:
            cur = stack.pop()
            if isinstance(cur, dict):
                if name in cur:
                    return cur[name]
                stack.extend(cur.values())
            elif isinstance(cur, list):
                stack.extend(cur)
    return None


def test_kubeadm_installs_in_order_with_the_right_join_parameters(lab):
    lab.user_kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    lab.user_kubeconfig.write_text(yaml.safe_dump(OTHER_CLUSTER))
    record: dict = {}
    ctx = lab.ctx("kubeadm", record)
    topo = ctx.topology
    m1, m2, m3 = topo.masters
    w1, w2 = topo.workers
    installer = KubeadmInstaller()

    async def scenario():
        await lab.install_doubles("v1.34.2", [*topo.masters, *topo.workers])
        # worker 2's first join fails once: the re-run must continue there, not start over
        await lab.run(w2.ip, "touch /etc/kubitect-doubles/fail-join-once")
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match="kubeadm join"):
            await installer.apply(ctx)
        failed_record = json.loads(json.dumps(record))
        resumed = await installer.apply(ctx)
        first_seconds = time.monotonic() - t0
        again = await installer.apply(ctx)
        calls = await lab.calls([*topo.masters, *topo.workers])
        ca = (await lab.run(m1.ip, "cat /etc/kubernetes/pki/ca.crt")).encode()
        leftovers = await lab.run(m2.ip, "ls /etc/kubernetes/kubitect/ 2>/dev/null | wc -l")
        timers = {m.name: await lab.run(m.ip, "systemctl is-enabled kubitect-certs-renew.timer", check=False)
                  for m in topo.masters}
        registered = await lab.registered(m1.ip)
        return failed_record, resumed, first_seconds, again, calls, ca, leftovers, registered, timers

    with entered_netns(lab.ns):
        failed_record, resumed, seconds, again, calls, ca, leftovers, registered, timers = asyncio.run(scenario())
        readyz = {ip: _readyz(ip) for ip in [VIP, *(m.ip for m in topo.masters)]}
        sans = {ip: _served_sans(ip) for ip in [VIP, m2.ip]}
    print(f"\nkubeadm apply (failed once, resumed) in {seconds:.1f}s")

    secrets_file = lab.cdir / "secrets" / "kubeadm.json"
    secrets = json.loads(secrets_file.read_text())
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    kadm = [c for c in calls if c["tool"] == "kubeadm" and c["argv"][:1] in (["init"], ["join"])
            and "phase" not in c["argv"] and c.get("phase") != "end"]
    seq = [(c["host"], c["argv"][0]) for c in kadm]
    # init first, on the first master, exactly once (the resume did not init again)
    assert seq[0] == (m1.name, "init") and [s for s in seq if s[1] == "init"] == [(m1.name, "init")]
    # control planes one at a time, before any worker; worker 2 joined twice (failed, then resumed)
    joins = [h for h, verb in seq if verb == "join"]
    assert joins[:2] == [m2.name, m3.name]
    assert sorted(joins[2:]) == sorted([w1.name, w2.name, w2.name])
    ends = {c["host"]: c["t"] for c in calls if c["tool"] == "kubeadm" and c.get("phase") == "end"
            and c["argv"][:1] == ["join"] and c["rc"] == 0}
    starts = {}
    for c in kadm:
        starts.setdefault(c["host"], c["t"])
    assert starts[m3.name] > ends[m2.name], "the second control plane joined before the first one finished"
    assert min(starts[w1.name], starts[w2.name]) > ends[m3.name], "a worker joined before the control planes"
    # the failed run recorded what was done; the resume joined only worker 2
    assert {n: r["state"] for n, r in failed_record["nodes"].items() if r["state"] == "joined"}.keys() >= {
        m1.name, m2.name, m3.name}
    assert failed_record["nodes"][w2.name]["state"] == "prepared"
    assert [c.name for c in resumed if c.kind == "node" and c.action == "create"] == [w2.name]

    # join parameters, as the nodes received them (and the first server accepted them)
    expected_hash = _spki_hash_with_openssl(ca)
    init_call = kadm[0]
    assert init_call["config_mode"] == "0o600"
    assert _field(init_call["config"], "controlPlaneEndpoint") == f"{VIP}:6443"
    assert VIP in _field(init_call["config"], "certSANs") and f"{NET}.11" in _field(init_call["config"], "certSANs")
    init_token = _field(init_call["config"], "token")
    # the resumed run joined worker 2 with a fresh token (created on the first master, the old one
    # deleted there); the first run's joins used the token of `kubeadm init`
    assert init_token != secrets["token"]
    refreshed = [c for c in calls if c["tool"] == "kubeadm" and c["argv"][:3] == ["init", "phase", "bootstrap-token"]
                 and c.get("phase") != "end"]
    assert [(c["host"], _field(c["config"], "token")) for c in refreshed] == [(m1.name, secrets["token"])]
    assert any(c["argv"] == ["token", "delete", init_token.split(".")[0]] for c in calls if c["tool"] == "kubeadm")
    for c in kadm[1:]:
        cfg = c["config"]
        assert c["config_mode"] == "0o600"
        assert _field(cfg, "apiServerEndpoint") == f"{VIP}:6443"
        resumed_join = c is kadm[-1]
        assert _field(cfg, "token") == (secrets["token"] if resumed_join else init_token), c["host"]
        assert _field(cfg, "caCertHashes") == [expected_hash]
        if c["host"] in (m2.name, m3.name):
            assert _field(cfg, "certificateKey") == secrets["certificate_key"]
        else:
            assert _field(cfg, "certificateKey") is None and secrets["certificate_key"] not in cfg
    assert leftovers.strip() == "0"  # join configs (secrets) are deleted from the nodes after use
    assert set(registered) == {n.name for n in [*topo.masters, *topo.workers]}
    assert all(r["via"] == f"{VIP}:6443" for n, r in registered.items() if n != m1.name)
    # node preparation ran through the (doubled) modprobe/sysctl, restricted labels via kubectl
    assert any(c["tool"] == "modprobe" and c["argv"] == ["br_netfilter"] for c in calls)
    assert any(c["tool"] == "kubectl" and "label" in c["argv"] and w1.name in c["argv"] for c in calls)
    assert any(c["tool"] == "kubectl" and c["argv"][-2:] == ["-f", c["argv"][-1]] and "calico" in c["argv"][-1]
               for c in calls)
    assert readyz == {ip: "ok" for ip in readyz}
    assert {VIP, f"{NET}.11", f"{NET}.12"} <= set(sans[VIP]) and m2.ip in sans[m2.ip], sans

    # other.autoRenewCertificates: a monthly renewal timer on every control plane
    assert {n: t.strip() for n, t in timers.items()} == {m.name: "enabled" for m in topo.masters}

    # idempotent: the second apply only keeps
    assert {c.action for c in again} == {"keep"}, [str(c) for c in again if c.action != "keep"]

    # kubeconfig: renamed, endpoint, 0600, merged next to the other cluster
    kc = yaml.safe_load((lab.cdir / "kubeconfig").read_text())
    assert stat.S_IMODE((lab.cdir / "kubeconfig").stat().st_mode) == 0o600
    assert kc["current-context"] == lab.cluster
    assert kc["clusters"][0]["cluster"]["server"] == f"https://{VIP}:6443"
    merged = yaml.safe_load(lab.user_kubeconfig.read_text())
    assert [c["name"] for c in merged["clusters"]] == ["prod", lab.cluster]
    assert record["merged_into"] == str(lab.user_kubeconfig)

    # the double really checks join parameters: a wrong token is refused by the first server
    bad = kadm[-1]["config"].replace(secrets["token"], "zzzzzz.zzzzzzzzzzzzzzzz")
    with entered_netns(lab.ns):
        refused = asyncio.run(lab.run(w1.ip, f"printf %s {shlex.quote(bad)} > /tmp/bad.yaml && "
                                             "kubeadm join --config /tmp/bad.yaml 2>&1; echo rc=$?", check=False))
    assert "bootstrap token does not match" in refused and "rc=1" in refused

    with entered_netns(lab.ns):
        gone = asyncio.run(installer.destroy(ctx))
        after = asyncio.run(lab.calls([*topo.masters, *topo.workers]))
    assert sorted(c.name for c in gone if c.kind == "node" and c.action == "delete") == sorted(
        n.name for n in [*topo.masters, *topo.workers])
    assert {c["host"] for c in after if c["tool"] == "kubeadm" and c["argv"][:1] == ["reset"]} == {
        n.name for n in [*topo.masters, *topo.workers]}
    assert yaml.safe_load(lab.user_kubeconfig.read_text()) == {**OTHER_CLUSTER, "current-context": "prod"}
    assert not secrets_file.exists() and not (lab.cdir / "kubeconfig").exists()


def test_k3s_servers_then_agents_through_the_endpoint_with_a_private_token(lab):
    record: dict = {}
    ctx = lab.ctx("k3s", record)
    topo = ctx.topology
    m1, m2, m3 = topo.masters
    installer = K3sInstaller()

    async def scenario():
        await lab.install_doubles("v1.34.2+k3s1", [*topo.masters, *topo.workers])
        t0 = time.monotonic()
        first = await installer.apply(ctx)
        seconds = time.monotonic() - t0
        again = await installer.apply(ctx)
        calls = await lab.calls([*topo.masters, *topo.workers])
        modes = {n.name: await lab.run(n.ip, "stat -c %a /etc/systemd/system/k3s*.service.env")
                 for n in [*topo.masters, *topo.workers]}
        registered = await lab.registered(m1.ip)
        active = await lab.run(topo.workers[0].ip, "systemctl is-active k3s-agent", check=False)
        return first, seconds, again, calls, modes, registered, active

    with entered_netns(lab.ns):
        first, seconds, again, calls, modes, registered, active = asyncio.run(scenario())
        readyz = {ip: _readyz(ip) for ip in [VIP, *(m.ip for m in topo.masters)]}
        sans = _served_sans(VIP)
    print(f"\nk3s apply in {seconds:.1f}s")

    token_file = lab.cdir / "secrets" / "k3s.json"
    token = json.loads(token_file.read_text())["token"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token) == 64 and token != hashlib.sha256(lab.cluster.encode()).hexdigest()
    runs = [c for c in calls if c["tool"] == "k3s" and c["argv"][:1] in (["server"], ["agent"])]
    assert runs[0]["host"] == m1.name and "--cluster-init" in runs[0]["argv"]
    for c in runs[1:]:
        assert f"--server=https://{VIP}:6443" in c["argv"] and "--cluster-init" not in c["argv"]
    for c in runs:
        assert c["env_token_set"] and not any(token in a for a in c["argv"])
        if c["argv"][0] == "server":
            assert f"--tls-san={VIP}" in c["argv"] and f"--tls-san={NET}.11" in c["argv"]
    # registration order: servers one by one, then agents
    order = sorted(registered, key=lambda n: registered[n]["t"])
    assert order[:3] == [m1.name, m2.name, m3.name]
    assert sorted(order[3:]) == sorted(w.name for w in topo.workers)
    assert all(m.strip() == "600" for m in modes.values()), modes
    assert active.strip() == "active"
    assert {VIP, f"{NET}.11", f"{NET}.12"} <= set(sans), sans
    assert readyz == {ip: "ok" for ip in readyz}
    assert {c.action for c in again} == {"keep"}, [str(c) for c in again if c.action != "keep"]
    kc = yaml.safe_load((lab.cdir / "kubeconfig").read_text())
    assert kc["contexts"][0]["name"] == lab.cluster and "default" not in json.dumps(kc)
    assert kc["clusters"][0]["cluster"]["server"] == f"https://{VIP}:6443"
    assert base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).startswith(b"-----BEGIN")

    with entered_netns(lab.ns):
        gone = asyncio.run(installer.destroy(ctx))
        left = asyncio.run(lab.run(m1.ip, "ls /etc/systemd/system/k3s.service 2>&1; systemctl is-active k3s",
                                   check=False))
    assert len([c for c in gone if c.kind == "node" and c.action == "delete"]) == 5
    assert "No such file" in left and "inactive" in left
    assert not token_file.exists()


@pytest.mark.parametrize("installer", [KubeadmInstaller(), K3sInstaller()], ids=["kubeadm", "k3s"])
def test_no_internet_fails_up_front_naming_the_source(lab, installer):
    """The default source downloads from upstream: without internet, apply stops before changing
    anything, with a message naming what could not be reached (the demo shows it as the skip reason)."""
    record: dict = {}
    ctx = lab.ctx(installer.name, record)
    ctx.options.update(installer_source="upstream", probe_timeout=2)
    started = time.monotonic()
    with entered_netns(lab.ns):
        with pytest.raises(StageError) as err:
            asyncio.run(installer.apply(ctx))
        reason = installer.internet_reason(ctx)
    seconds = time.monotonic() - started
    expected = "pkgs.k8s.io" if installer.name == "kubeadm" else "github.com/k3s-io/k3s/releases"
    assert expected in str(err.value) and "cannot reach" in str(err.value)
    assert ctx.topology.masters[0].name in str(err.value)
    assert reason is not None and expected in reason
    assert record == {}  # nothing recorded, no secret generated: the probe comes first
    assert not (lab.cdir / "secrets" / ("kubeadm.json" if installer.name == "kubeadm" else "k3s.json")).exists()
    assert seconds < 20


def test_k3s_upgrade_one_minor_servers_one_at_a_time_then_agents(lab):
    """`--action upgrade` for k3s: its etcd snapshot first, then each node drained, its binary (staged:
    the double's version file stands in for the downloaded release) run by a restarted unit, back
    at the new version before the next; servers one at a time, then the agents."""
    from dataclasses import replace

    from doubles.install import stage_version

    record: dict = {}
    ctx = lab.ctx("k3s", record)
    topo = ctx.topology
    nodes = [*topo.masters, *topo.workers]
    raw = lab_raw(lab.cluster, "k3s")
    raw["kubernetes"]["version"] = "v1.35.0"
    up_ctx = replace(ctx, config=validate_raw(raw).config)
    installer = K3sInstaller()

    async def scenario():
        await lab.install_doubles("v1.34.2+k3s1", nodes)
        await installer.apply(ctx)
        await stage_version(lab.ssh, nodes, "v1.35.0+k3s1")
        t0 = time.monotonic()
        changes = await installer.apply(up_ctx)
        seconds = time.monotonic() - t0
        calls = await lab.calls(nodes)
        listed = json.loads(await lab.run(topo.masters[0].ip, "/usr/local/bin/k3s kubectl get nodes -o json"))
        after = json.loads(json.dumps(record))
        await installer.destroy(up_ctx)
        return changes, seconds, calls, listed, after

    with entered_netns(lab.ns):
        changes, seconds, calls, listed, after = asyncio.run(scenario())
    print(f"\nk3s upgrade v1.34.2+k3s1 -> v1.35.0+k3s1 (3 servers, 2 agents) in {seconds:.1f}s")
    assert [c.name for c in changes if c.kind == "node" and c.action == "change"][:3] == [n.name for n in topo.masters]
    snap = [c for c in changes if c.kind == "etcd-snapshot"]
    assert len(snap) == 1 and "0600" in snap[0].detail
    saved = list((lab.cdir / "backups").glob("etcd-pre-upgrade-v1.34.2-to-v1.35.0-*.db"))
    assert len(saved) == 1 and stat.S_IMODE(saved[0].stat().st_mode) == 0o600
    # k3s restarted by its unit: every (re)start is recorded; after the install's, one per node, in order
    starts = [c for c in calls if c["tool"] == "k3s" and c["argv"][:1] in (["server"], ["agent"])]
    upgraded = [c["host"] for c in starts[len(nodes):]]
    assert upgraded[:3] == [n.name for n in topo.masters]
    assert sorted(upgraded[3:]) == sorted(w.name for w in topo.workers)
    snapshot_at = next(c["t"] for c in calls if c["tool"] == "k3s" and c["argv"][:2] == ["etcd-snapshot", "save"])
    drains = [c for c in calls if c["tool"] == "k3s-kubectl" and "drain" in c["argv"]]
    assert snapshot_at < drains[0]["t"] < starts[len(nodes)]["t"]
    assert {i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"] for i in listed["items"]} == \
        {n.name: "v1.35.0+k3s1" for n in nodes}
    assert not any(i["spec"].get("unschedulable") for i in listed["items"])
    assert "upgrade" not in after and after["nodes"][topo.workers[0].name]["version"] == "v1.35.0+k3s1"
