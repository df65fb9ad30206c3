"""The lab harness: namespaces up and down, crash clean-up, and the root namespace left untouched.

Needs root and iproute2. Labs here are named `kbt2-<random>-...` and removed in `finally`.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sshd_lab import HARNESS_MARKS, harness_prefix

from kubitect_core.lab import MARKER_ENV, Lab, lab_down, lab_down_all, lab_status, lab_up, netns, procs
from kubitect_core.lab import libvirtd as lab_libvirtd
from kubitect_core.lab.safety import diff_snapshots, snapshot_netns, snapshot_root_netns

pytestmark = HARNESS_MARKS


@pytest.fixture
def prefix():
    """A prefix no other test run uses; everything with it is removed afterwards."""
    with harness_prefix() as p:
        yield p


def _alive(pids):
    return [p for p in pids if procs.alive(p)]


def _daemon(lab: Lab, seconds: int = 300) -> int:
    """A detached long-running process inside the lab (like a daemon that outlives its starter)."""
    out = lab.run(["sh", "-c", f"setsid sleep {seconds} >/dev/null 2>&1 & echo $!"],
                  capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_up_exec_down(prefix):
    lab = Lab("a", prefix=prefix)
    with lab:
        assert netns.exists(lab.netns)
        links = lab.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
        assert [ln.split(":")[1].strip() for ln in links.stdout.splitlines()] == ["lo"]
        marker = lab.run(["sh", "-c", f"echo ${MARKER_ENV}"], capture_output=True, text=True)
        assert marker.stdout.strip() == lab.netns
        assert lab.run(["sh", "-c", "exit 7"]).returncode == 7
        pids = [_daemon(lab) for _ in range(2)]
        assert set(pids) <= set(netns.pids(lab.netns))
        status = {s.namespace: s for s in lab_status(prefix)}
        assert status[lab.netns].exists and len(status[lab.netns].pids) >= 2
    assert not netns.exists(lab.netns)
    assert _alive(pids) == []
    assert lab_status(prefix) == []
    assert lab.down() == []  # idempotent: nothing left to do


def test_up_removes_a_leftover_of_the_same_name(prefix):
    first = Lab("same", prefix=prefix).up()
    old = _daemon(first)
    second = Lab("same", prefix=prefix).up()
    try:
        assert not procs.alive(old)
        assert netns.pids(second.netns) == []
    finally:
        second.down()


_RUNNER = textwrap.dedent("""
    import subprocess, sys, time
    from kubitect_core.lab import Lab
    lab = Lab(sys.argv[1], prefix=sys.argv[2]).up()
    for _ in range(3):
        lab.run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 &"])
    print("ready", flush=True)
    time.sleep(300)
""")


def _crashed_runner(name: str, prefix: str) -> list[int]:
    """Start a runner that brings a lab up with three daemons, then SIGKILL it (a crash)."""
    runner = subprocess.Popen([sys.executable, "-c", _RUNNER, name, prefix], stdout=subprocess.PIPE,
                              text=True)
    assert runner.stdout.readline().strip() == "ready"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    ns = prefix + name
    left = netns.pids(ns)
    assert len(left) == 3, "the crashed runner's daemons should still run"
    return left


def test_down_after_crashed_runner(prefix):
    left = _crashed_runner("crash", prefix)
    started = time.monotonic()
    assert sorted(lab_down("crash", prefix=prefix)) == sorted(left)
    assert time.monotonic() - started < 5
    assert _alive(left) == []
    assert not netns.exists(prefix + "crash")


def test_down_sweeps_processes_of_an_already_deleted_namespace(prefix):
    """A crash during teardown: the namespace name is gone, its marked daemons still run."""
    left = _crashed_runner("half", prefix)
    netns.delete(prefix + "half")
    assert not netns.exists(prefix + "half") and len(_alive(left)) == 3
    assert sorted(lab_down("half", prefix=prefix)) == sorted(left)
    assert _alive(left) == []


def test_down_all_removes_every_lab_of_the_prefix_only(prefix):
    other = Lab(f"kbt2-{secrets.token_hex(3)}-other").up()
    try:
        keep = _daemon(other)
        labs = [Lab(n, prefix=prefix).up() for n in ("x", "y")]
        pids = [_daemon(lab) for lab in labs]
        done = lab_down_all(prefix=prefix)
        assert set(done) == {lab.netns for lab in labs}
        assert _alive(pids) == []
        assert netns.names(prefix) == []
        assert procs.alive(keep) and netns.exists(other.netns)
    finally:
        other.down()


def _busy_lab_network(lab: Lab) -> None:
    """Do inside the lab what a kubitect run does: bridges, veths, addresses, firewall, sysctls."""
    peer = lab.netns + "-n"
    subprocess.run(["ip", "netns", "add", peer], check=True)
    try:
        cmds = [
            "ip link add br0 type bridge",
            "ip link set br0 up",
            "ip addr add 10.231.0.1/24 dev br0",
            f"ip link add v0 type veth peer name eth0 netns {peer}",
            "ip link set v0 master br0 up",
            "sysctl -qw net.ipv4.ip_forward=1",
            "ip route add 10.232.0.0/24 via 10.231.0.2",
        ]
        for c in cmds:
            lab.run(c.split(), check=True)
        if shutil.which("nft"):
            lab.run(["nft", "add table inet kbt2; add chain inet kbt2 c { type filter hook input "
                     "priority 0; }; add rule inet kbt2 c tcp dport 6443 accept"], check=True)
        subprocess.run(["ip", "-n", peer, "addr", "add", "10.231.0.2/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", peer, "link", "set", "eth0", "up"], check=True)
        # A refused TCP connection proves the peer answered across the bridge and veth.
        probe = ("import socket\ntry:\n socket.create_connection(('10.231.0.2', 9), 3)\n"
                 "except ConnectionRefusedError:\n print('answered')")
        out = lab.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert out.stdout.strip() == "answered", out.stderr
    finally:
        subprocess.run(["ip", "netns", "del", peer], check=False)


def test_root_namespace_unchanged_by_a_busy_lab(prefix):
    before = snapshot_root_netns()
    with Lab("busy", prefix=prefix) as lab:
        _busy_lab_network(lab)
        assert diff_snapshots(before, snapshot_root_netns()) == []
    assert diff_snapshots(before, snapshot_root_netns()) == []


def test_snapshot_sees_changes_it_is_meant_to_catch(prefix):
    """The detector itself: changes made in a lab namespace show in that namespace's snapshot."""
    with Lab("probe", prefix=prefix) as lab:
        path = f"/run/netns/{lab.netns}"
        before = snapshot_netns(path)
        _busy_lab_network(lab)
        diff = "\n".join(diff_snapshots(before, snapshot_netns(path)))
    assert "links: + br0 kind=bridge" in diff
    assert "10.231.0.1/24" in diff
    assert "10.232.0.0/24" in diff
    assert "net/ipv4/ip_forward" in diff
    if shutil.which("nft"):
        assert "table inet kbt2" in diff


@pytest.mark.skipif(shutil.which("libvirtd") is None, reason="libvirtd is not installed")
def test_libvirtd_runs_inside_the_lab_and_its_bridges_stay_there(prefix):
    if lab_libvirtd.socket_answers():
        pytest.skip("another libvirtd already serves /run/libvirt/libvirt-sock (one per machine)")
    before = snapshot_root_netns()
    ns = prefix + "virt"
    try:
        status = lab_up("virt", libvirt=True, prefix=prefix)
        daemons = dict(status.daemons)
        assert set(daemons) == {"virtlogd", "libvirtd"} and all(daemons.values())
        assert set(daemons.values()) <= set(netns.pids(ns))
        xml = Path(f"/run/kubitect-lab/{ns}/kbt2net.xml")
        xml.write_text("<network><name>kbt2net</name><bridge name='kbt2br0'/>"
                       "<ip address='10.233.0.1' prefix='24'/></network>")
        virsh = ["virsh", "-q", "-c", "qemu:///system"]
        subprocess.run([*virsh, "net-create", str(xml)], check=True, capture_output=True)
        inside = subprocess.run(["ip", "-n", ns, "-br", "addr", "show", "kbt2br0"],
                                capture_output=True, text=True)
        assert "10.233.0.1/24" in inside.stdout
        nets = subprocess.run([*virsh, "net-list", "--all", "--name"], capture_output=True, text=True)
        assert "default" not in nets.stdout.split()
        assert diff_snapshots(before, snapshot_root_netns()) == []
    finally:
        lab_down("virt", prefix=prefix)
    assert _alive(list(daemons.values())) == []
    assert not lab_libvirtd.socket_answers()
    assert diff_snapshots(before, snapshot_root_netns()) == []
