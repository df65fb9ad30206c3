"""Remote libvirt hosts' SSH trust against real sshds in lab namespaces (see sshd_lab.py).

Three namespaces, no link to the root one:

    client ns  (the test thread enters it)   sshd "host"  127.0.0.2:2222 (and :2223)
       | veth 10.77.0.0/30
    jump ns    sshd "jump" 10.77.0.1:22
       | veth 10.78.0.0/30 (no forwarding: the client cannot reach it directly)
    target ns  sshd "far"  10.78.0.2:22

What libvirt would run is exercised for real: the wrapper kubitect writes for `command=` is run
with the arguments libvirt's ssh transport passes (`-p -l -i -T -e none -- host cmd`).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import sshd_lab
from kubitect_plugins.libvirt.host_ssh import HostSsh, check_host_key, host_ssh, write_wrapper
from kubitect_plugins.libvirt.spec import attr
from sshd_lab import Sshd, entered_netns, run

from kubitect_core import known_hosts as kh

pytestmark = pytest.mark.lab

HOST = "127.0.0.2"
JUMP, FAR = "10.77.0.1", "10.78.0.2"


@dataclass
class Lab:
    client: str
    key: Path
    host: Sshd
    jump: Sshd
    far: Sshd
    workdir: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    sshd_lab.require_lab(sshd_lab.SSHD, "ssh", "unshare")
    workdir = sshd_lab.lab_workdir("kbt7-trust-")
    key = tmp_path_factory.mktemp("client") / "id_ed25519"
    public = sshd_lab.write_keypair(key).export_public_key("openssh").decode()
    started: list[Sshd] = []
    try:
        with sshd_lab.lab_netns("kbt7c-") as c, sshd_lab.lab_netns("kbt7j-") as j, \
                sshd_lab.lab_netns("kbt7t-") as t:
            for argv in (["ip", "-n", c, "link", "add", "kv0", "type", "veth", "peer", "name", "kv1", "netns", j],
                         ["ip", "-n", c, "addr", "add", "10.77.0.2/30", "dev", "kv0"],
                         ["ip", "-n", c, "link", "set", "kv0", "up"],
                         ["ip", "-n", j, "addr", "add", f"{JUMP}/30", "dev", "kv1"],
                         ["ip", "-n", j, "link", "set", "kv1", "up"],
                         ["ip", "-n", j, "link", "add", "kv2", "type", "veth", "peer", "name", "kv3", "netns", t],
                         ["ip", "-n", j, "addr", "add", "10.78.0.1/30", "dev", "kv2"],
                         ["ip", "-n", j, "link", "set", "kv2", "up"],
                         ["ip", "-n", t, "addr", "add", f"{FAR}/30", "dev", "kv3"],
                         ["ip", "-n", t, "link", "set", "kv3", "up"]):
                run(*argv)
            for ns, where, addr, port in ((c, "host", HOST, 2222), (j, "jump", JUMP, 22), (t, "far", FAR, 22)):
                started.append(Sshd(ns, workdir / where, addr, port, public).start())
            yield Lab(c, key, *started, workdir)
    finally:
        for sshd in started:
            sshd.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _access(tmp_path: Path, address=HOST, port: int | None = 2222, keyfile: Path | None = None,
            verify=False, name="h1") -> HostSsh:
    return HostSsh(host=name, address=address, user="root", port=port, keyfile=str(keyfile) if keyfile else None,
                   verify=verify, ssh_dir=str(tmp_path / "cluster" / "ssh"))


def _as_libvirt(lab: Lab, access: HostSsh, command: str = "echo via-libvirt-ssh") -> subprocess.CompletedProcess:
    """Runs the host's wrapper exactly as libvirt's ssh transport calls `command=`."""
    argv = [str(write_wrapper(access))]
    if access.port is not None:
        argv += ["-p", str(access.port)]
    argv += ["-l", access.user]
    if access.keyfile:
        argv += ["-i", access.keyfile]
    argv += ["-T", "-e", "none", "--", access.address, command]
    with entered_netns(lab.client):
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _probe(lab: Lab, access: HostSsh) -> None:
    with entered_netns(lab.client):
        check_host_key(access)


def _pins(access: HostSsh) -> list[bytes]:
    return [k.public_data for k in kh.keys_for(access.known_hosts, access.pin_name)]


def test_first_contact_pins_the_host_key_and_libvirts_ssh_then_checks_it(lab, tmp_path):
    access = _access(tmp_path, keyfile=lab.key)
    assert not access.known_hosts.exists()
    _probe(lab, access)
    _probe(lab, access)  # a second contact: the same key, nothing added
    lines = access.known_hosts.read_text().splitlines()
    assert lines == [kh.key_line(f"[{HOST}]:2222", lab.host.host_key)]
    done = _as_libvirt(lab, access)
    assert done.returncode == 0 and done.stdout.strip() == "via-libvirt-ssh", done.stderr
    assert access.known_hosts.read_text().splitlines() == lines  # ssh(1) added nothing either


def test_a_changed_host_key_is_refused_naming_the_host_and_both_fingerprints(lab, tmp_path):
    other = Sshd(lab.client, lab.workdir / "rekeyed", HOST, 2223, lab.host.authorized_key).start()
    try:
        access = _access(tmp_path, port=2223, keyfile=lab.key, name="host7")
        _probe(lab, access)
        old = kh.fingerprint(other.host_key)
        other.stop()
        other.start(new_host_key=True)
        with pytest.raises(ConnectionError) as err:
            _probe(lab, access)
        msg = str(err.value)
        assert "host host7" in msg and f"{HOST}:2223" in msg and "changed" in msg
        assert old in msg and kh.fingerprint(other.host_key) in msg
        assert f"ssh-keygen -R '[{HOST}]:2223'" in msg
        assert "AAAA" not in msg  # fingerprints, never key material
        assert [kh.fingerprint(k) for k in kh.keys_for(access.known_hosts, access.pin_name)] == [old]
        refused = _as_libvirt(lab, access)  # libvirt's own ssh refuses it too
        assert refused.returncode != 0 and "via-libvirt-ssh" not in refused.stdout
        assert "host key" in refused.stderr.lower(), refused.stderr
    finally:
        other.stop()


def test_verify_true_needs_the_key_in_the_users_known_hosts_before_first_contact(lab, tmp_path,
                                                                                 private_user_ssh_dir):
    access = _access(tmp_path, keyfile=lab.key, verify=True)
    with pytest.raises(ConnectionError) as err:
        _probe(lab, access)
    msg = str(err.value)
    assert "host h1" in msg and "ssh.verify is true" in msg and kh.fingerprint(lab.host.host_key) in msg
    assert _pins(access) == []  # nothing trusted
    refused = _as_libvirt(lab, access)
    assert refused.returncode != 0
    # The user checks the fingerprint and adds the key (hashed, as Debian's ssh would)
    (private_user_ssh_dir / "known_hosts").write_text(
        kh.key_line(f"[{HOST}]:2222", lab.host.host_key, hashed=True) + "\n")
    _probe(lab, access)
    assert _pins(access) == [lab.host.host_key.public_data]
    assert _as_libvirt(lab, access).returncode == 0


def test_port_and_identityfile_come_from_the_users_ssh_config(lab, tmp_path, private_user_ssh_dir):
    (private_user_ssh_dir / "config").write_text(f"Host {HOST}\n  Port 2222\n  IdentityFile {lab.key}\n")
    host = {"name": "h1", "connection": {"type": "remote", "ip": HOST, "user": "root", "ssh": {}}}
    access = host_ssh(host, tmp_path / "cluster" / "ssh", attr)
    assert access.port is None and access.keyfile is None  # nothing in the YAML: the config decides
    assert "keyfile=" not in access.uri() and f"@{HOST}/system" in access.uri()
    _probe(lab, access)
    assert access.pin_name == HOST and _pins(access) == [lab.host.host_key.public_data]
    done = _as_libvirt(lab, access)
    assert done.returncode == 0, done.stderr


def test_proxyjump_from_the_users_ssh_config(lab, tmp_path, private_user_ssh_dir):
    user_kh = private_user_ssh_dir / "known_hosts"
    user_kh.write_text(kh.key_line(JUMP, lab.jump.host_key) + "\n")  # the user already trusts the jump
    (private_user_ssh_dir / "config").write_text(
        f"Host {FAR}\n  ProxyJump jumphost\n"
        f"Host jumphost\n  HostName {JUMP}\n  User root\n  IdentityFile {lab.key}\n"
        f"  UserKnownHostsFile {user_kh}\n  StrictHostKeyChecking yes\n")
    with entered_netns(lab.client):  # the far host is not reachable directly from here
        direct = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                 "-i", str(lab.key), f"root@{FAR}", "true"], capture_output=True, text=True)
    assert direct.returncode != 0
    access = _access(tmp_path, address=FAR, port=None, keyfile=lab.key, name="far")
    _probe(lab, access)
    assert _pins(access) == [lab.far.host_key.public_data]
    done = _as_libvirt(lab, access, "cat /proc/sys/kernel/hostname; echo reached")
    assert done.returncode == 0 and done.stdout.split()[-1] == "reached", done.stderr
    # an untrusted jump host is not a changed key of the far host: said as such
    user_kh.write_text("")
    with pytest.raises(ConnectionError) as err:
        _probe(lab, access)
    assert "ProxyJump" in str(err.value) and "changed" not in str(err.value)
