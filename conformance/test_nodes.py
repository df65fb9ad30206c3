"""Every node: reachable over SSH with the cluster key, named, logged in and addressed as configured,
with its data disks present at their configured size."""

from __future__ import annotations

import shlex

import pytest
from kubitect_conformance.cluster import DISK_DIR_NSPAWN, GIB

from kubitect_core.topology import data_disk_by_id, data_disk_serial


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


def test_data_disk_is_present_at_its_size(data_disk, kubitect_inventory):
    """Each disk is found by its stable identity, never by attach order (vdb, vdc shift when a
    disk is added or removed): VMs see it at /dev/disk/by-id/virtio-<serial> (the serial libvirt
    gives it), nspawn nodes as a file under /var/lib/kubitect/disks/ named after the disk."""
    node, disk = data_disk
    want = int(disk["size_gib"]) * GIB
    provider = node.info.get("provider") or "libvirt"
    if provider == "nspawn":
        path = f"{DISK_DIR_NSPAWN}/{disk['name']}.img"
        command = f"stat -c %s {shlex.quote(path)}"
    else:
        path = data_disk_by_id(data_disk_serial(kubitect_inventory["cluster"], node.name, disk["name"]))
        command = f"lsblk -b -d -n -o SIZE {shlex.quote(path)}"
    res = node.run(command)
    if res.rc != 0:
        listing = node.run("ls -l /dev/disk/by-id/ 2>&1").stdout.strip() if provider != "nspawn" else ""
        pytest.fail(f"node {node.name}: data disk '{disk['name']}' missing: {path} does not exist"
                    + (f"; /dev/disk/by-id holds: {listing[-600:]}" if listing else ""))
    size = int(res.stdout.strip() or 0)
    assert size == want, (f"node {node.name}: data disk '{disk['name']}' ({path}) is {size} bytes, "
                          f"the config asks for {disk['size_gib']} GiB")
