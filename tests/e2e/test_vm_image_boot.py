"""A VM boots from the built image under libvirtd in a lab namespace and answers over SSH.

Real libvirtd + QEMU (TCG: this machine's KVM cannot run guests), direct kernel boot with the
kernel and initrd from the image, a NoCloud seed ISO (pycdlib) with a user, key and static
address on an isolated libvirt network that exists only inside the lab namespace.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kubitect_core.images.vm_image import LB_PACKAGES, ensure_vm_image
from kubitect_core.lab import Lab
from kubitect_core.lab import libvirtd as lab_libvirtd
from kubitect_core.lab.safety import diff_snapshots, snapshot_root_netns

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, libvirtd, mmdebstrap)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64",
                                              "qemu-img", "mmdebstrap", "ssh", "ssh-keygen")),
        reason="needs libvirt daemons, QEMU, mmdebstrap and an SSH client",
    ),
]

NET = "10.234.0"
VM_IP = f"{NET}.10"
MAC = "52:54:00:4b:42:0a"
SSH_WAIT = 300


def _image_home() -> Path:
    return Path(os.environ.get("KUBITECT_IMAGE_HOME", "/var/tmp/kubitect-test-home"))


def _seed_iso(user_data: str, meta_data: str, network_config: str) -> bytes:
    pycdlib = pytest.importorskip("pycdlib")
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for short, name, text in (("USERDATA.;1", "user-data", user_data),
                              ("METADATA.;1", "meta-data", meta_data),
                              ("NETCFG.;1", "network-config", network_config)):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), "/" + short, rr_name=name, joliet_path="/" + name)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _domain_xml(name: str, image, disk: Path, seed: Path, console: Path, network: str) -> str:
    return textwrap.dedent(f"""\
        <domain type='qemu'>
          <name>{name}</name>
          <memory unit='MiB'>512</memory>
          <vcpu>1</vcpu>
          <os>
            <type arch='x86_64' machine='pc'>hvm</type>
            <kernel>{image.kernel}</kernel>
            <initrd>{image.initrd}</initrd>
            <cmdline>{image.cmdline}</cmdline>
          </os>
          <features><acpi/><tcg><tb-cache unit='MiB'>256</tb-cache></tcg></features>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/><source file='{seed}'/><target dev='hdc' bus='ide'/>
              <readonly/>
            </disk>
            <interface type='network'>
              <source network='{network}'/><mac address='{MAC}'/><model type='virtio'/>
            </interface>
            <serial type='file'><source path='{console}'/><target port='0'/></serial>
          </devices>
        </domain>""")


def _wait_port(lab: Lab, host: str, port: int, timeout: float) -> float:
    probe = textwrap.dedent(f"""
        import socket, sys, time
        t0 = time.monotonic()
        while time.monotonic() - t0 < {timeout}:
            try:
                socket.create_connection(("{host}", {port}), 2).close()
                print(round(time.monotonic() - t0, 1)); sys.exit(0)
            except OSError:
                time.sleep(1)
        sys.exit(1)""")
    out = lab.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, f"port {port} on {host} did not open within {timeout} s"
    return float(out.stdout)


def test_vm_boots_from_the_image_and_answers_over_ssh(tmp_path):
    if lab_libvirtd.socket_answers():
        pytest.skip("another libvirtd already serves /run/libvirt/libvirt-sock (one per machine)")
    image = ensure_vm_image(_image_home(), extra_packages=LB_PACKAGES)
    before = snapshot_root_netns()
    tag = f"kbt2-{secrets.token_hex(3)}"
    work = Path("/var/lib/libvirt/images") / tag
    work.mkdir(parents=True)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    user_data = "#cloud-config\n" + textwrap.dedent(f"""\
        hostname: {tag}
        users:
          - name: kbt
            sudo: ALL=(ALL) NOPASSWD:ALL
            shell: /bin/bash
            ssh_authorized_keys: ["{key.with_suffix('.pub').read_text().strip()}"]
        """)
    network_config = textwrap.dedent(f"""\
        version: 2
        ethernets:
          nic0:
            match: {{macaddress: "{MAC}"}}
            set-name: eth0
            addresses: [{VM_IP}/24]
        """)
    seed = work / "seed.iso"
    seed.write_bytes(_seed_iso(user_data, f"instance-id: {tag}\nlocal-hostname: {tag}\n",
                               network_config))
    disk = work / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.qcow2),
                    str(disk), "4G"], check=True)
    console = work / "console.log"
    lab = Lab(f"{tag}-virt", libvirt=True, prefix="kbt2-")
    virsh = ["virsh", "-q", "-c", "qemu:///system"]
    try:
        lab.up()
        net_xml = work / "net.xml"
        net_xml.write_text(f"<network><name>{tag}</name><bridge name='kbt2vbr0'/>"
                           f"<ip address='{NET}.1' prefix='24'/></network>")
        subprocess.run([*virsh, "net-create", str(net_xml)], check=True, capture_output=True)
        dom_xml = work / "domain.xml"
        dom_xml.write_text(_domain_xml(tag, image, disk, seed, console, tag))
        started = time.monotonic()
        subprocess.run([*virsh, "create", str(dom_xml)], check=True, capture_output=True)
        port_open = _wait_port(lab, VM_IP, 22, SSH_WAIT)
        ssh = ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", f"kbt@{VM_IP}"]
        deadline = time.monotonic() + 120
        while True:  # sshd may be up before cloud-init has installed the key
            out = lab.run([*ssh, "cloud-init status --wait >/dev/null; hostname; "
                           "cloud-init status; sudo -n true && echo sudo-ok"],
                          capture_output=True, text=True, timeout=300)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(3)
        ready = time.monotonic() - started
        print(f"\nVM port 22 open after {port_open:.0f} s; SSH + cloud-init done after {ready:.0f} s")
        assert out.returncode == 0, out.stderr + console.read_text(errors="replace")[-3000:]
        lines = out.stdout.split()
        assert lines[0] == tag
        assert "status: done" in out.stdout and "sudo-ok" in out.stdout
        assert diff_snapshots(before, snapshot_root_netns()) == []
    finally:
        subprocess.run([*virsh, "destroy", tag], capture_output=True)
        subprocess.run([*virsh, "net-destroy", tag], capture_output=True)
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    assert diff_snapshots(before, snapshot_root_netns()) == []
