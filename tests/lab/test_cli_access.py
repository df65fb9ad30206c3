"""`kubitect ssh`, `kubitect export ssh-config` and `kubitect status` against real sshds in a lab namespace.

The cluster is what `kubitect apply` leaves behind for DHCP nodes (nat network, no IP in the
config): the stored config, the vms stage's record with the nodes' leased addresses, the cluster
key and the pinned known_hosts. Each node is a real sshd on its address inside the namespace;
the real OpenSSH client (or asyncssh, for status) talks to it, from the real `kubitect` process.
(Status on a whole cluster with Kubernetes and keepalived: tests/lab/test_full_pipeline.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import sshd_lab
import yaml
from sshd_lab import Sshd, entered_netns

from kubitect_core import remote
from kubitect_core.state import ClusterState

pytestmark = pytest.mark.lab

LEASE = "10.89.0.57"  # the address "DHCP gave" the master: it exists only inside the lab namespace
LB_LEASE = "10.89.0.56"
VIP = "10.89.0.100"
CLUSTER = "kbt9-access"
NODE = f"{CLUSTER}-master-1"
LB = f"{CLUSTER}-lb-1"


def _config() -> dict:
    return {
        "hosts": [{"name": "localhost", "connection": {"type": "local"}}],
        "cluster": {
            "name": CLUSTER,
            "network": {"mode": "nat", "cidr": "10.89.0.0/24"},
            "nodeTemplate": {"user": "root", "os": {"distro": "debian12"}},
            "nodes": {"loadBalancer": {"vip": VIP, "instances": [{"id": 1}]},  # no ip: DHCP
                      "master": {"instances": [{"id": 1}]}},
        },
        "kubernetes": {"version": "v1.34.2"},
    }


@pytest.fixture
def node(tmp_path):
    """(namespace, master's sshd, home, load balancer's sshd): each node a real sshd at its lease."""
    sshd_lab.require_lab(sshd_lab.SSHD, "ssh")
    workdir = sshd_lab.lab_workdir("kbt9-access-")
    home = tmp_path / "home"
    try:
        with sshd_lab.lab_netns("kbt9-") as ns:
            for address in (LEASE, LB_LEASE):
                sshd_lab.run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "lo")
            state = ClusterState(home, CLUSTER)
            state.create()
            state.save_config(yaml.safe_dump(_config(), sort_keys=False))
            state.save_record({"stages": {"vms": {"status": "completed", "data": {"libvirt": {"nodes": {
                NODE: {"name": NODE, "host": "localhost", "ip": LEASE, "mac": "52:54:00:00:00:57", "domain": NODE},
                LB: {"name": LB, "host": "localhost", "ip": LB_LEASE, "mac": "52:54:00:00:00:56", "domain": LB},
            }}}}}})
            state.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = state.ssh_dir / "id_ed25519"
            public = sshd_lab.write_keypair(key).export_public_key("openssh").decode()
            sshd = Sshd(ns, workdir / "sshd", LEASE, 22, public).start()
            lb = Sshd(ns, workdir / "sshd-lb", LB_LEASE, 22, public)
            try:
                lb.start()
                with entered_netns(ns):  # what the vms stage does: pin each node's key once
                    asyncio.run(_pin(state, LEASE, NODE))
                    asyncio.run(_pin(state, LB_LEASE, LB))
                yield ns, sshd, home, lb
            finally:
                lb.stop()
                sshd.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _pin(state: ClusterState, address: str, name: str) -> None:
    conn = await remote.connect(address, user="root", key=state.ssh_dir / "id_ed25519",
                                known_hosts=state.ssh_dir / "known_hosts", name=name)
    await conn.close()


def _kubitect(ns: str, home, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBITECT_HOME": str(home)}
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "kubitect_core.cli", *args],
                          capture_output=True, text=True, env=env, input=input, timeout=60)


def test_ssh_reaches_the_leased_node_with_the_pinned_key_and_refuses_a_changed_one(node, tmp_path):
    ns, sshd, home, _lb = node
    known_hosts = (home / "clusters" / CLUSTER / "ssh" / "known_hosts").read_text()

    who = _kubitect(ns, home, "ssh", "--cluster", CLUSTER, "master-1", "--", "id -un; echo $SSH_CONNECTION")
    assert who.returncode == 0, who.stderr
    user, connection = who.stdout.splitlines()
    assert user == "root" and connection.split()[2] == LEASE, "the node's recorded lease, as its user"
    status = _kubitect(ns, home, "ssh", "--cluster", CLUSTER, NODE, "--", "exit", "3")
    assert status.returncode == 3, "the remote command's exit status"
    piped = _kubitect(ns, home, "ssh", "--cluster", CLUSTER, LEASE, "--", "tr", "a-z", "A-Z", input="from stdin\n")
    assert (piped.returncode, piped.stdout) == (0, "FROM STDIN\n")

    exported = tmp_path / "ssh_config"
    assert _kubitect(ns, home, "export", "ssh-config", "--cluster", CLUSTER, "--file", str(exported)).returncode == 0
    with entered_netns(ns):
        plain = subprocess.run(["ssh", "-F", str(exported), NODE, "hostname"], capture_output=True, text=True,
                               timeout=20, stdin=subprocess.DEVNULL)
    assert plain.returncode == 0 and plain.stdout.strip() == os.uname().nodename, plain.stderr

    sshd.stop()
    sshd.start(new_host_key=True)  # the node was replaced behind kubitect's back (or someone is in between)
    refused = _kubitect(ns, home, "ssh", "--cluster", CLUSTER, "master-1", "--", "true")
    assert refused.returncode == 255 and "host key" in refused.stderr.lower(), refused.stderr
    assert (home / "clusters" / CLUSTER / "ssh" / "known_hosts").read_text() == known_hosts, "never re-learnt"


def test_status_shows_reachability_the_vip_holder_and_a_changed_key(node):
    ns, sshd, home, lb = node

    def status(*extra: str) -> dict:
        proc = _kubitect(ns, home, "status", "--cluster", CLUSTER, "-o", "json", *extra)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        return json.loads(proc.stdout)

    first = status()
    rows = {n["name"]: n for n in first["nodes"]}
    assert {n: (r["state"], r["address"], r["dhcp"]) for n, r in rows.items()} == {
        LB: ("reachable", LB_LEASE, True), NODE: ("reachable", LEASE, True)}
    assert rows[LB]["holds_vip"] is False and first["vip_holders"] == []
    assert first["kubernetes"] is None and first["last_verify"] is None

    sshd_lab.run("ip", "-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo")  # keepalived's job on a real LB
    assert status()["vip_holders"] == [LB]
    text = _kubitect(ns, home, "status", "--cluster", CLUSTER)
    assert f"VIP {VIP}: held by {LB}" in text.stdout and "Kubernetes: not installed yet" in text.stdout

    sshd.stop()
    lb.stop()
    lb.start(new_host_key=True)
    started = time.monotonic()
    later = status("--timeout", "2")
    took = time.monotonic() - started
    rows = {n["name"]: n for n in later["nodes"]}
    assert rows[NODE]["state"] == "unreachable" and rows[NODE]["detail"]
    assert rows[LB]["state"] == "host key changed" and later["vip_holders"] == [], "a changed key is not trusted"
    assert took < 15, f"a dead node costs one bounded probe, not a hang ({took:.1f} s)"


def test_bash_completes_the_clusters_nodes_for_ssh(node, tmp_path):
    """TAB after `kubitect ssh --cluster NAME` offers the cluster's nodes, read from its state by the
    real completion script in a real bash (as a user installs it: `kubitect completion bash`)."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    _ns, _sshd, home, _lb = node
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "KUBITECT_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    script = tmp_path / "kubitect.bash"
    made = subprocess.run(["kubitect", "completion", "bash"], capture_output=True, text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    script.write_text(made.stdout)

    def complete(words: str) -> list[str]:
        code = (f"source {script}\nCOMP_WORDS=({words})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n"
                '_kubitect_completion kubitect\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
        proc = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if line]

    assert complete(f'kubitect ssh --cluster {CLUSTER} ""') == [LB, NODE]
    assert complete(f"kubitect ssh --cluster {CLUSTER} {CLUSTER}-m") == [NODE]
    assert complete('kubitect status --cluster ""') == [CLUSTER]


def test_topology_draws_the_clusters_config_with_the_nodes_status_reaches(node, tmp_path):
    """`kubitect topology` on the cluster's own config, in the lab: the picture names the nodes,
    hosts and VIP that `status` reaches over SSH (drawn from the config alone: no host is asked)."""
    ns, _sshd, home, _lb = node
    config = ClusterState(home, CLUSTER).config_path  # the config as given to the last apply
    picture = tmp_path / "topology.svg"
    drawn = _kubitect(ns, home, "topology", str(config), "--svg", str(picture), "-o", "json")
    assert drawn.returncode == 0, drawn.stderr
    view = json.loads(drawn.stdout)
    status = json.loads(_kubitect(ns, home, "status", "--cluster", CLUSTER, "-o", "json").stdout)
    assert sorted(n for h in view["hosts"] for n in h["nodes"]) == sorted(n["name"] for n in status["nodes"])
    assert view["vip"] == VIP and view["cluster"] == CLUSTER
    svg = picture.read_text()
    assert svg.lstrip().startswith("<svg") or "<svg" in svg[:200]
    assert all(name in svg for name in (NODE, LB, VIP, "localhost"))
    tree = _kubitect(ns, home, "topology", str(config))
    assert tree.returncode == 0 and NODE in tree.stdout and "DHCP" in tree.stdout, tree.stdout


def test_export_logs_bundles_what_ran_on_the_nodes_with_secrets_redacted(node, tmp_path):
    """A run's log (what the engine writes for apply: every node command through the remote layer,
    its exit status and output) is bundled by `kubitect export logs` from the real process."""
    import io
    import tarfile

    from kubitect_core import runlog

    ns, _sshd, home, _lb = node
    state = ClusterState(home, CLUSTER)
    secret = "abcdef.0123456789abcdef"  # a kubeadm bootstrap token's shape

    async def steps() -> None:
        conn = await remote.connect(LEASE, user="root", key=state.ssh_dir / "id_ed25519",
                                    known_hosts=state.ssh_dir / "known_hosts", name=NODE)
        try:
            await conn.run("echo prepared on $(hostname)")
            await conn.run(f"echo kubeadm join 10.89.0.100:6443 --token {secret}")
            with pytest.raises(remote.RemoteError):
                await conn.run("echo about to fail >&2; exit 7")
        finally:
            await conn.close()

    log = runlog.open_log(state.dir / "logs", "apply", cluster=CLUSTER)
    with entered_netns(ns), runlog.installed(log):
        asyncio.run(steps())
    log.close()

    bundle = tmp_path / "logs.tar.gz"
    made = _kubitect(ns, home, "export", "logs", "--cluster", CLUSTER, "--file", str(bundle), "-o", "json")
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["kind"] == "log-bundle" and doc["bytes"] == bundle.stat().st_size
    assert oct(bundle.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(bundle) as tar:
        logs = [m for m in tar.getmembers() if m.name.endswith(".log")]
        assert logs, tar.getnames()
        text = "".join(io.TextIOWrapper(tar.extractfile(m)).read() for m in logs)
    assert NODE in text and f"prepared on {os.uname().nodename}" in text
    assert "exit 7" in text and "about to fail" in text
    assert secret not in text and "kubeadm join" in text, "the token is redacted, the command kept"
    again = _kubitect(ns, home, "export", "logs", "--cluster", CLUSTER, "--file", str(bundle))
    assert again.returncode == 2 and "does not overwrite" in again.stderr
