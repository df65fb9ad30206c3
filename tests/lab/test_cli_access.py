"""`kubitect ssh` and `kubitect export ssh-config` against a real sshd in a lab namespace.

The cluster is what `kubitect apply` leaves behind for a DHCP node (nat network, no IP in the
config): the stored config, the vms stage's record with the node's leased address, the cluster
key and the pinned known_hosts. The node is a real sshd on that address inside the namespace;
the real OpenSSH client talks to it, started by the real `kubitect` process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import pytest
import sshd_lab
import yaml
from sshd_lab import Sshd, entered_netns

from kubitect_core import remote
from kubitect_core.state import ClusterState

pytestmark = pytest.mark.lab

LEASE = "10.89.0.57"  # the address "DHCP gave" the master: it exists only inside the lab namespace
CLUSTER = "kbt9-access"
NODE = f"{CLUSTER}-master-1"


def _config() -> dict:
    return {
        "hosts": [{"name": "localhost", "connection": {"type": "local"}}],
        "cluster": {
            "name": CLUSTER,
            "network": {"mode": "nat", "cidr": "10.89.0.0/24"},
            "nodeTemplate": {"user": "root", "os": {"distro": "debian12"}},
            "nodes": {"master": {"instances": [{"id": 1}]}},  # no ip: DHCP
        },
        "kubernetes": {"version": "v1.34.2"},
    }


@pytest.fixture
def node(tmp_path):
    """(namespace, sshd, home) for a one-node cluster whose master is a real sshd at its lease."""
    sshd_lab.require_lab(sshd_lab.SSHD, "ssh")
    workdir = sshd_lab.lab_workdir("kbt9-access-")
    home = tmp_path / "home"
    try:
        with sshd_lab.lab_netns("kbt9-") as ns:
            sshd_lab.run("ip", "-n", ns, "addr", "add", f"{LEASE}/24", "dev", "lo")
            state = ClusterState(home, CLUSTER)
            state.create()
            state.save_config(yaml.safe_dump(_config(), sort_keys=False))
            state.save_record({"stages": {"vms": {"status": "completed", "data": {"libvirt": {"nodes": {
                NODE: {"name": NODE, "host": "localhost", "ip": LEASE, "mac": "52:54:00:00:00:57",
                       "domain": NODE}}}}}}})
            state.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = state.ssh_dir / "id_ed25519"
            public = sshd_lab.write_keypair(key).export_public_key("openssh").decode()
            sshd = Sshd(ns, workdir / "sshd", LEASE, 22, public).start()
            with entered_netns(ns):  # what the vms stage does: pin the node's key once
                asyncio.run(_pin(state))
            try:
                yield ns, sshd, home
            finally:
                sshd.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _pin(state: ClusterState) -> None:
    conn = await remote.connect(LEASE, user="root", key=state.ssh_dir / "id_ed25519",
                                known_hosts=state.ssh_dir / "known_hosts", name=NODE)
    await conn.close()


def _kubitect(ns: str, home, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBITECT_HOME": str(home)}
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "kubitect_core.cli", *args],
                          capture_output=True, text=True, env=env, input=input, timeout=60)


def test_ssh_reaches_the_leased_node_with_the_pinned_key_and_refuses_a_changed_one(node, tmp_path):
    ns, sshd, home = node
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
