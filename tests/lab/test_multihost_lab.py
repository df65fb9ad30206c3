"""`kubitect lab up NAME --config FILE`: one simulated host per `hosts:` entry of the seed, on one segment.

Starts from the seed's own file (examples/ha.yaml) and checks what a user of those five hosts
relies on: each host has its address on the config's bridge, an sshd admitting the config's
user with the config's key (made in the lab's home, never the user's real ~/.ssh), and a
libvirtd of its own reached with qemu+ssh from the workstation; the data pool directories exist
on the hosts that declare them; a host's uplink can be pulled and plugged back; and `lab down`
removes every namespace, process and file, also when the lab's state was lost. Needs root,
iproute2, sshd, libvirtd and virsh (no VMs are started).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sshd_lab import HARNESS_MARKS, harness_prefix

from kubitect_core.lab import harness, hostlab, netns, procs

pytestmark = [*HARNESS_MARKS, pytest.mark.skipif(
    not all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in ("sshd", "libvirtd", "virsh", "nsenter")),
    reason="lab test: needs sshd, libvirtd, virsh and nsenter")]

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "ha.yaml"
KUBITECT = str(Path(sys.executable).with_name("kubitect"))
HOSTS = {"host1": "10.10.0.5", "host2": "10.10.0.6", "host3": "10.10.0.10", "host4": "10.10.0.11",
         "host5": "10.10.0.12"}


@pytest.fixture(scope="module")
def seed_lab(tmp_path_factory):
    """The seed's five hosts as a lab (a tiny stand-in file as the image: no VM boots here)."""
    image = tmp_path_factory.mktemp("img") / "disk.qcow2"
    image.write_bytes(b"not really an image")
    real_ssh = sorted(p.name for p in (Path.home() / ".ssh").glob("*")) if (Path.home() / ".ssh").is_dir() else []
    with harness_prefix("kbt13") as prefix:
        lines: list[str] = []
        status = harness.lab_up("seed", prefix=prefix, config=SEED, image=image, progress=lines.append)
        try:
            yield status, prefix, lines, real_ssh
        finally:
            harness.lab_down(status.namespace, prefix=prefix)


def _ws(status, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(harness.exec_argv(status.namespace, list(argv)), env=harness.lab_env(status.namespace),
                          capture_output=True, text=True, timeout=60, **kw)


def _on_host(status, host: str, *argv: str) -> subprocess.CompletedProcess:
    h = status.info["hosts"][host]
    return subprocess.run(["nsenter", "-t", str(h["holder"]), "-n", "-m", "-u", "--", *argv],
                          capture_output=True, text=True, timeout=60)


def test_each_host_has_its_address_on_the_configured_bridge(seed_lab):
    status, _prefix, lines, _ = seed_lab
    assert set(status.info["hosts"]) == set(HOSTS)
    for host, ip in HOSTS.items():
        addr = _on_host(status, host, "ip", "-o", "-4", "addr", "show", "dev", "br0").stdout
        assert f"{ip}/20" in addr, (host, addr)
        link = _on_host(status, host, "ip", "-o", "link", "show", "dev", hostlab.UPLINK).stdout
        assert "master br0" in link, (host, link)
        assert _on_host(status, host, "hostname").stdout.strip() == host
        route = _on_host(status, host, "ip", "route", "show", "default").stdout
        assert "via 10.10.0.1" in route
    plan = status.info["plan"]
    assert (plan["cidr"], plan["gateway"]) == ("10.10.0.0/20", "10.10.0.1")
    assert plan["workstation_ip"] not in {*HOSTS.values(), "10.10.13.200"}
    assert any("segment 10.10.0.0/20" in m for m in lines)


def test_qemu_ssh_reaches_each_hosts_own_libvirtd_as_the_configured_user(seed_lab):
    status, *_ = seed_lab
    home = status.info["home"]
    for host, ip in HOSTS.items():
        uri = f"qemu+ssh://kubitect@{ip}/system?keyfile={home}/.ssh/id_rsa_ha"
        out = _ws(status, "virsh", "-c", uri, "hostname")
        assert out.returncode == 0 and out.stdout.strip() == host, (host, out.stderr)
    # one host's libvirt objects are its own: a pool defined on host1 does not exist on host2
    _ws(status, "virsh", "-c", f"qemu+ssh://kubitect@10.10.0.5/system?keyfile={home}/.ssh/id_rsa_ha",
        "pool-define-as", "only-on-host1", "dir", "--target", "/var/lib/libvirt/images/x")
    pools = {h: _on_host(status, h, "virsh", "-c", "qemu:///system", "pool-list", "--all", "--name").stdout.split()
             for h in ("host1", "host2")}
    assert "only-on-host1" in pools["host1"] and "only-on-host1" not in pools["host2"]
    assert _on_host(status, "host1", "id", "-Gn", "kubitect").stdout.split() == ["kubitect", "libvirt"]


def test_keys_live_in_the_lab_home_never_in_the_users_real_ssh(seed_lab):
    status, _prefix, _lines, real_ssh_before = seed_lab
    home = Path(status.info["home"])
    key = home / ".ssh" / "id_rsa_ha"
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert (home / ".ssh" / "known_hosts").read_text().count("ssh-ed25519") == len(HOSTS)
    real = Path.home() / ".ssh"
    assert (sorted(p.name for p in real.glob("*")) if real.is_dir() else []) == real_ssh_before
    env = _ws(status, "sh", "-c", 'echo "$HOME|$KUBITECT_HOME"; getent passwd "$(id -u)" | cut -d: -f6')
    want_home = str(home)
    assert env.stdout.split() == [f"{want_home}|{want_home}/.kubitect", want_home]
    with pytest.raises(hostlab.LabConfigError, match="outside the lab's home"):
        hostlab.resolve_keyfile("/root/.ssh/id_rsa", home, "host1")


def test_data_pool_directories_exist_only_on_the_hosts_that_declare_them(seed_lab):
    status, *_ = seed_lab
    for host in HOSTS:
        has = _on_host(status, host, "test", "-d", "/mnt/libvirt/pools").returncode == 0
        assert has == (host in ("host3", "host4", "host5")), host


def test_the_stand_in_image_is_imported_and_says_what_it_is(seed_lab):
    status, *_ = seed_lab
    image = status.info["image"]
    assert image["distro"] == "ubuntu22" and "Debian 12" in image["label"] and "not ubuntu22" in image["label"]
    listing = subprocess.run(harness.exec_argv(status.namespace, [KUBITECT, "image", "list"]),
                             env={**harness.lab_env(status.namespace), "COLUMNS": "250"}, capture_output=True,
                             text=True)
    assert listing.returncode == 0 and "ubuntu22" in listing.stdout
    assert "Debian 12" in listing.stdout and "disk.qcow2" in listing.stdout


def test_a_pulled_uplink_takes_the_host_off_the_segment_and_back(seed_lab):
    status, prefix, *_ = seed_lab
    probe = ("import socket,sys\ntry: socket.create_connection(('10.10.0.6', 22), 2).close()\n"
             "except OSError: sys.exit(1)")
    assert _ws(status, "python3", "-c", probe).returncode == 0
    cut = subprocess.run([KUBITECT, "lab", "uplink", "seed", "host2", "--down", "--prefix", prefix],
                         capture_output=True, text=True)
    assert cut.returncode == 0, cut.stdout + cut.stderr
    try:
        assert _ws(status, "python3", "-c", probe).returncode == 1
        assert _ws(status, "python3", "-c", probe.replace("10.10.0.6", "10.10.0.5")).returncode == 0
    finally:
        back = subprocess.run([KUBITECT, "lab", "uplink", "seed", "host2", "--up", "--prefix", prefix],
                              capture_output=True, text=True)
    assert back.returncode == 0 and _ws(status, "python3", "-c", probe).returncode == 0


def test_lab_down_removes_every_host_also_when_its_state_was_lost(tmp_path):
    cfg = yaml.safe_load(SEED.read_text())
    cfg["hosts"] = cfg["hosts"][:2]
    for inst in cfg["cluster"]["nodes"]["master"]["instances"] + cfg["cluster"]["nodes"]["worker"]["instances"]:
        inst["host"] = "host2"
    for inst in cfg["cluster"]["nodes"]["worker"]["instances"]:
        inst.pop("dataDisks", None)
    small = tmp_path / "two-hosts.yaml"
    small.write_text(yaml.safe_dump(cfg, sort_keys=False))
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"x")
    with harness_prefix("kbt13") as prefix:
        status = harness.lab_up("crash", prefix=prefix, config=small, image=image)
        ns = status.namespace
        members = hostlab.member_names(ns)
        assert len(members) == 3  # switch + 2 hosts
        pids = [p for m in members for p in netns.pids(m)]
        assert pids
        shutil.rmtree(harness.STATE_ROOT / ns)  # a crashed run's state is gone
        harness.lab_down(ns, prefix=prefix)
        assert hostlab.member_names(ns) == [] and not netns.exists(ns)
        assert not [p for p in pids if procs.alive(p)]
        assert not hostlab.data_dir(ns).exists()
    assert os.geteuid() == 0
