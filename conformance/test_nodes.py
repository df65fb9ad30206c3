"""Every node: reachable over SSH with the cluster key, named, logged in and addressed as configured,
with its data disks present at their configured size."""

from __future__ import annotations

import shlex

import pytest
from kubitect_conformance.cluster import DISK_DIR_NSPAWN, GIB


def test_node_is_reachable_over_ssh(node):
    try:
        res = node.run("true")
    except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
        pytest.fail(f"node {node.label()} is not reachable over SSH as '{node.control.user}' with the "
                    f"cluster key and pinned host key: {getattr(exc.args[0], 'stderr', exc)}")
    assert res.rc == 0


def test_node_identity_is_as_configured(node):
    hostname = node.run("hostname").stdout.strip()
    user = node.run("id -un").stdout.strip()
    addrs = node.run("ip -4 -o addr show").stdout
    problems = []
    if hostname.split(".")[0] != node.name:
        problems.append(f"hostname is '{hostname}', the config names it '{node.name}'")
    if user != node.control.user:
        problems.append(f"logged in as '{user}', expected the node user '{node.control.user}'")
    if node.ip and f" {node.ip}/" not in addrs:
        source = "DHCP lease recorded for it" if node.info.get("dhcp") else "configured IP"
        problems.append(f"no interface carries the {source} {node.ip}")
    assert not problems, f"node {node.label()}: " + "; ".join(problems)


def _block_device_sizes(node) -> dict[str, int]:
    out = node.run("lsblk -b -d -n -o NAME,SIZE,TYPE").stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "disk":
            sizes[parts[0]] = int(parts[1])
    return sizes


def test_data_disk_is_present_at_its_size(data_disk):
    """nspawn nodes see a disk as a file under /var/lib/kubitect/disks/; VMs as a virtio disk.

    libvirt attaches data disks after the main disk (vda) in config order: vdb, vdc, ...
    """
    node, disk = data_disk
    want = int(disk["size_gib"]) * GIB
    provider = node.info.get("provider") or "libvirt"
    if provider == "nspawn":
        path = f"{DISK_DIR_NSPAWN}/{disk['name']}.img"
        res = node.run(f"stat -c %s {shlex.quote(path)}")
        assert res.rc == 0, f"node {node.name}: data disk '{disk['name']}' missing ({path} does not exist)"
        assert int(res.stdout) == want, (f"node {node.name}: data disk '{disk['name']}' is {int(res.stdout)} "
                                         f"bytes, the config asks for {disk['size_gib']} GiB")
        return
    index = [d["name"] for d in node.info["data_disks"]].index(disk["name"])
    dev = "vd" + chr(ord("b") + index)
    sizes = _block_device_sizes(node)
    assert dev in sizes, (f"node {node.name}: data disk '{disk['name']}' should be /dev/{dev}; "
                          f"block devices: {sizes}")
    assert sizes[dev] == want, (f"node {node.name}: /dev/{dev} ('{disk['name']}') is {sizes[dev]} bytes, "
                                f"the config asks for {disk['size_gib']} GiB")
