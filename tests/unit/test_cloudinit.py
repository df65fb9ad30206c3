"""The cloud-init NoCloud seed: rendered files per network mode, and the ISO read back with
pycdlib (label `cidata`, Rock Ridge and Joliet names, exact contents)."""

from __future__ import annotations

import io
import ipaddress
import os
import subprocess
import time

import pycdlib
import pytest
import yaml
from kubitect_plugins.libvirt.cloudinit import (
    UPDATE_INDEX_TIMEOUT_S,
    UPDATE_STATUS_FILE,
    build_iso,
    read_iso,
    render_seed,
)
from kubitect_plugins.libvirt.render import render
from kubitect_plugins.libvirt.spec import NetSpec, instance_id
from kubitect_plugins.libvirt.vms_layer import NodeTemplate, node_seed

from kubitect_core.topology import Node

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUnitTestKeyOnly kubitect-test"
NODE = Node(role="master", id="1", name="demo-master-1", host="h", ip="10.0.7.10", mac=None,
            cpu=2, ram_gib=4, main_disk_gib=32)


def net(mode: str, dns: tuple[str, ...] = ()) -> NetSpec:
    return NetSpec(mode=mode, cidr=ipaddress.IPv4Network("10.0.0.0/20"), gateway="10.0.0.1",
                   bridge="br0" if mode == "bridge" else None, dns=dns, nic="ens3")


def tpl(update: bool = True) -> NodeTemplate:
    return NodeTemplate(user="k8s", public_key=KEY, update_on_boot=update, cpu_mode="custom")


@pytest.mark.parametrize("mode", ["route", "bridge"])
def test_static_address_in_route_and_bridge_modes(mode):
    cfg = yaml.safe_load(node_seed("demo", NODE, net(mode, ("1.1.1.1", "9.9.9.9")), tpl()).network_config)
    eth = cfg["ethernets"]["ens3"]
    assert cfg["version"] == 2
    assert eth["dhcp4"] is False and eth["addresses"] == ["10.0.7.10/20"]
    assert eth["gateway4"] == "10.0.0.1"
    assert eth["nameservers"]["addresses"] == ["1.1.1.1", "9.9.9.9"]


def test_dhcp_in_nat_mode_with_the_gateway_as_dns():
    cfg = yaml.safe_load(node_seed("demo", NODE, net("nat"), tpl()).network_config)
    eth = cfg["ethernets"]["ens3"]
    assert eth["dhcp4"] is True and "addresses" not in eth
    assert eth["nameservers"]["addresses"] == ["10.0.0.1"]


@pytest.mark.parametrize("update", [True, False])
def test_user_data_user_key_sudo_and_update_on_boot(update):
    text = node_seed("demo", NODE, net("bridge"), tpl(update)).user_data
    assert text.startswith("#cloud-config\n")
    ud = yaml.safe_load(text)
    assert ud["hostname"] == "demo-master-1" and ud["preserve_hostname"] is False
    (user,) = ud["users"]
    assert user["name"] == "k8s" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["lock_passwd"] is True and user["ssh_authorized_keys"] == [KEY]
    # cloud-init's own update retries for minutes without a mirror and then reports success: the
    # bounded script does it instead, and only when updateOnBoot asks for it.
    assert ud["package_update"] is False and ud["package_upgrade"] is False and "packages" not in ud
    scripts = [f for f in ud.get("write_files", []) if f["path"] == "/usr/local/sbin/kubitect-update-on-boot"]
    assert bool(scripts) is update
    assert (["/usr/local/sbin/kubitect-update-on-boot"] in ud["runcmd"]) is update
    if update:
        body = scripts[0]["content"]
        assert f"timeout {UPDATE_INDEX_TIMEOUT_S} apt-get" in body and "Acquire::Retries=0" in body
        assert UPDATE_STATUS_FILE in body
    assert any("qemu-guest-agent" in " ".join(map(str, c)) for c in ud["runcmd"])


def test_meta_data_instance_id_is_stable_and_per_node():
    md = yaml.safe_load(node_seed("demo", NODE, net("nat"), tpl()).meta_data)
    assert md["instance-id"] == instance_id("demo", "demo-master-1") == instance_id("demo", "demo-master-1")
    assert md["instance-id"] != instance_id("demo", "demo-master-2")
    assert md["local-hostname"] == "demo-master-1"


def test_values_are_quoted_not_injected():
    seed = render_seed(hostname="n1", user="k8s", public_key='ssh-ed25519 AAAA x"\n- evil: 1',
                       update_on_boot=False, instance_id="iid-1", nic="ens3", static=False, ip=None,
                       prefix=24, gateway="10.0.0.1", nameservers=["10.0.0.1"])
    ud = yaml.safe_load(seed.user_data)
    assert ud["users"][0]["ssh_authorized_keys"] == ['ssh-ed25519 AAAA x"\n- evil: 1']


def test_seed_iso_reads_back_with_label_and_files():
    files = node_seed("demo", NODE, net("route"), tpl())
    data = build_iso(files)
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        for name, text in files.as_dict().items():
            for kwargs in ({"rr_path": f"/{name}"}, {"joliet_path": f"/{name}"}):
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, **kwargs)
                assert buf.getvalue().decode() == text
    finally:
        iso.close()
    assert read_iso(data) == ("cidata", files.as_dict())


def test_seed_digest_follows_content():
    a = node_seed("demo", NODE, net("route"), tpl(True))
    assert a.digest == node_seed("demo", NODE, net("route"), tpl(True)).digest
    assert a.digest != node_seed("demo", NODE, net("route"), tpl(False)).digest


def test_nic_is_matched_by_mac_and_named_as_configured():
    cfg = yaml.safe_load(node_seed("demo", NODE, net("bridge"), tpl(), "52:54:00:aa:bb:cc").network_config)
    eth = cfg["ethernets"]["ens3"]
    assert eth["match"] == {"macaddress": "52:54:00:aa:bb:cc"} and eth["set-name"] == "ens3"


@pytest.mark.parametrize("mode", ["nat", "bridge"])
def test_seed_files_golden(mode):
    """The rendered seed of one node, pinned (KUBITECT_UPDATE_GOLDEN=1 rewrites; review the diff)."""
    import os
    from pathlib import Path
    golden = Path(__file__).parent / "golden" / "libvirt"
    files = node_seed("demo", NODE, net(mode, ("10.0.0.53",)), tpl(mode == "nat"), "52:54:00:aa:bb:cc")
    for name, text in files.as_dict().items():
        path = golden / f"seed-{mode}-{name}.yaml"
        if os.environ.get("KUBITECT_UPDATE_GOLDEN") == "1":
            path.write_text(text)
        assert text == path.read_text(), f"{path.name} differs from its golden file"


_FAKE_APT = {
    "offline": "echo 'Err:1 http://deb.debian.org/debian bookworm InRelease'; "
               "echo \"W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure "
               "resolving 'deb.debian.org'\"; exit 0",
    "hangs": "sleep 30",
    "online": 'case "$*" in *update*) echo "Hit:1 http://deb.debian.org/debian bookworm InRelease";; esac; exit 0',
}


@pytest.mark.parametrize("mirror,expected", [("offline", "unreachable: W: Failed to fetch"),
                                             ("hangs", "unreachable: no answer within 2 s"),
                                             ("online", "ok")])
def test_update_on_boot_script_ends_within_its_bound_and_says_why(tmp_path, mirror, expected):
    """The script cloud-init runs for updateOnBoot, run here with a stand-in apt-get (a double) on
    PATH: a mirror that cannot be reached or never answers ends in a status line, not a hang."""
    status = tmp_path / "update-on-boot"
    ud = yaml.safe_load(render("user-data.j2", hostname="n", user="k8s", public_key=KEY, update_on_boot=True,
                               update_index_timeout=2, update_status_file=str(status),
                               host_key=None))
    script = tmp_path / "update.sh"
    script.write_text(ud["write_files"][0]["content"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\n" + _FAKE_APT[mirror] + "\n")
    os.chmod(bin_dir / "apt-get", 0o755)
    started = time.monotonic()
    proc = subprocess.run(["sh", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=20)
    assert proc.returncode == 0 and time.monotonic() - started < 8
    assert status.read_text().startswith(expected), status.read_text()


def test_host_key_becomes_the_nodes_only_key_and_stays_out_of_reprs(tmp_path):
    from kubitect_plugins.libvirt.node_keys import NodeKeyStore

    store = NodeKeyStore(tmp_path / "host-keys")
    key = store.ensure("demo-master-1")
    assert store.ensure("demo-master-1") == key  # made once
    files = node_seed("demo", NODE, net("bridge"), tpl(), host_key=key)
    user_data = yaml.safe_load(files.user_data)
    assert user_data["ssh_keys"] == {"ed25519_private": key.private_openssh, "ed25519_public": key.public_openssh}
    assert user_data["ssh_deletekeys"] is True and user_data["ssh_genkeytypes"] == []
    assert "PRIVATE" not in repr(key) and "PRIVATE" in key.private_openssh
    label, back = read_iso(build_iso(files))
    assert yaml.safe_load(back["user-data"])["ssh_keys"]["ed25519_private"] == key.private_openssh
    without = yaml.safe_load(node_seed("demo", NODE, net("bridge"), tpl()).user_data)
    assert "ssh_keys" not in without and "ssh_genkeytypes" not in without  # a node made before keys
