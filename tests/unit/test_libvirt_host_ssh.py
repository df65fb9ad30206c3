"""How a remote libvirt host is reached: the qemu+ssh URI libvirt really parses, the ssh wrapper,
the default key, the user's SSH config, and a fast failure when SSH does not answer."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
import yaml

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from kubitect_plugins.libvirt import host_ssh  # noqa: E402
from kubitect_plugins.libvirt.connection import quiet_libvirt  # noqa: E402
from kubitect_plugins.libvirt.host_ssh import HostSsh, check_host_key, wrapper_text, write_wrapper  # noqa: E402
from kubitect_plugins.libvirt.spec import host_specs, host_uri  # noqa: E402

from kubitect_core.config import load_config  # noqa: E402

WEIRD = "we ird&dir?x=1#y%25z+;"


def _record_args(path: Path, out: Path) -> None:
    """A stand-in for ssh(1) at `path` that records the arguments libvirt gives it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{out}'\nexit 1\n")
    path.chmod(0o700)


def _libvirt_args(uri: str, out: Path) -> list[str]:
    quiet_libvirt()
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(uri)
    return out.read_text().splitlines()


def test_keyfile_and_wrapper_paths_reach_ssh_intact_through_libvirts_uri_parser(tmp_path):
    ssh_dir = tmp_path / WEIRD / "ssh"
    keyfile = tmp_path / WEIRD / "key file&x?#%.pem"
    access = HostSsh(host="host-1", address="127.0.0.1", user="kubitect", port=2222, keyfile=str(keyfile),
                     verify=False, ssh_dir=str(ssh_dir))
    out = tmp_path / "args.txt"
    _record_args(access.wrapper, out)  # libvirt runs `command=`: here, the recorder
    args = _libvirt_args(access.uri(), out)
    assert args[args.index("-i") + 1] == str(keyfile)
    assert args[args.index("-p") + 1] == "2222" and args[args.index("-l") + 1] == "kubitect"
    assert "BatchMode=yes" in args  # no_tty=1: ssh never prompts
    assert not any("StrictHostKeyChecking=no" in a for a in args)  # no no_verify=1 any more
    assert args[args.index("--") + 1] == "127.0.0.1"


def test_port_left_to_the_ssh_config_when_the_yaml_sets_none(tmp_path):
    access = HostSsh(host="h", address="127.0.0.1", user="u", port=None, keyfile=None, verify=True,
                     ssh_dir=str(tmp_path / "ssh"))
    out = tmp_path / "args.txt"
    _record_args(access.wrapper, out)
    args = _libvirt_args(access.uri(), out)
    assert "-p" not in args and "-i" not in args
    assert access.pin_name == "127.0.0.1"
    assert HostSsh(**{**access.as_record(), "port": 2222}).pin_name == "[127.0.0.1]:2222"


def _config(tmp_path: Path, ssh: dict) -> Path:
    data = {
        "hosts": [{"name": "h1", "connection": {"type": "remote", "user": "kubitect", "ip": "10.10.0.5",
                                                "ssh": ssh}},
                  {"name": "local", "connection": {"type": "local"}}],
        "cluster": {"name": "c1", "network": {"cidr": "10.10.0.0/24"},
                    "nodes": {"master": {"instances": [{"id": 1, "ip": "10.10.0.20"}]}}},
        "kubernetes": {"version": "v1.28.6"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_remote_host_without_keyfile_validates_and_uses_id_rsa_of_the_users_ssh_dir(tmp_path,
                                                                                   private_user_ssh_dir):
    config = load_config(_config(tmp_path, {})).config
    specs = host_specs(config, None, tmp_path / "cluster" / "ssh")
    access = specs["h1"].ssh
    assert access.keyfile == str(private_user_ssh_dir / "id_rsa") and access.port is None
    assert access.verify is False
    assert specs["h1"].uri == access.uri()
    assert f"keyfile={private_user_ssh_dir}/id_rsa&" in access.uri()
    assert "no_verify" not in access.uri() and "@10.10.0.5/system?" in access.uri()
    assert specs["local"].ssh is None and specs["local"].uri == "qemu:///system"


def test_an_identityfile_in_the_users_ssh_config_replaces_the_default_key(tmp_path, private_user_ssh_dir):
    (private_user_ssh_dir / "config").write_text("Host 10.10.0.*\n  IdentityFile ~/.ssh/lab_key\n")
    access = host_specs(load_config(_config(tmp_path, {"port": 22})).config, None, tmp_path).get("h1").ssh
    assert access.keyfile is None and access.port == 22  # ssh and asyncssh read IdentityFile themselves
    assert "keyfile=" not in access.uri() and "@10.10.0.5:22/system" in access.uri()
    explicit = host_specs(load_config(_config(tmp_path, {"keyfile": "~/k", "verify": True})).config, None,
                          tmp_path)["h1"].ssh
    assert explicit.keyfile == str(Path("~/k").expanduser()) and explicit.verify is True


def test_uri_overrides_bypass_ssh_entirely(tmp_path, monkeypatch):
    config = load_config(_config(tmp_path, {"keyfile": "/k"})).config
    monkeypatch.setenv("KUBITECT_LIBVIRT_URI_H1", "test:///default")
    spec = host_specs(config, None, tmp_path)["h1"]
    assert spec.uri == "test:///default" and spec.ssh is None
    assert host_uri(config.hosts[0], {"h1": "qemu:///session"}) == ("qemu:///session", True)


def test_wrapper_checks_keys_strictly_against_the_pinned_file_with_the_users_config(tmp_path,
                                                                                     private_user_ssh_dir):
    access = HostSsh(host="h1", address="10.0.0.5", user="u", port=2222, keyfile=None, verify=False,
                     ssh_dir=str(tmp_path / "my cluster" / "ssh"))
    path = write_wrapper(access)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert text == wrapper_text(access, text.split("exec ", 1)[1].split()[0])
    assert f"'UserKnownHostsFile={tmp_path}/my cluster/ssh/hosts_known_hosts'" in text
    for option in ("StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null", "'HostKeyAlias=[10.0.0.5]:2222'",
                   "BatchMode=yes"):
        assert option in text
    assert "-F /dev/null" in text  # the override dir has no config: ssh reads no other one
    (private_user_ssh_dir / "config").write_text("Host *\n  ConnectTimeout 5\n")
    assert f"-F {private_user_ssh_dir}/config" in write_wrapper(access).read_text()
    assert text.endswith('"$@"\n')


def test_a_host_whose_ssh_port_does_not_answer_fails_fast_naming_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the socket goes: connecting is refused
    key = tmp_path / "id"
    key.write_bytes(__import__("asyncssh").generate_private_key("ssh-ed25519").export_private_key())
    access = HostSsh(host="host1", address="127.0.0.1", user="kubitect", port=port, keyfile=str(key),
                     verify=False, ssh_dir=str(tmp_path / "ssh"))
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        check_host_key(access)
    assert time.monotonic() - t0 < 5
    assert f"host host1 (127.0.0.1:{port})" in str(err.value) and "cannot connect over SSH" in str(err.value)
    assert not access.known_hosts.exists() or access.known_hosts.read_text() == ""


def test_a_missing_default_key_is_named_before_any_contact(tmp_path, private_user_ssh_dir):
    access = HostSsh(host="host1", address="192.0.2.1", user="kubitect", port=None,
                     keyfile=host_ssh.default_keyfile("192.0.2.1", "kubitect", None), verify=False,
                     ssh_dir=str(tmp_path / "ssh"))
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot read the SSH private key {private_user_ssh_dir}/id_rsa"):
        check_host_key(access)  # 192.0.2.1 (TEST-NET) is never contacted: the key is read first
    assert time.monotonic() - t0 < 2


def test_a_plan_of_a_cluster_never_applied_creates_no_cluster_directory(tmp_path):
    from types import SimpleNamespace

    from kubitect_plugins.libvirt.provider import LibvirtProvider

    provider = LibvirtProvider()
    ctx = SimpleNamespace(cluster_dir=tmp_path / "home" / "clusters" / "c1")
    scratch = provider.hosts.ssh_dir(ctx)
    assert not str(scratch).startswith(str(tmp_path)) and scratch.name == "ssh"
    provider.close()
    assert not scratch.parent.exists() and not ctx.cluster_dir.exists()
    ctx.cluster_dir.mkdir(parents=True)
    assert provider.hosts.ssh_dir(ctx) == ctx.cluster_dir / "ssh"  # once applied: the cluster's own
