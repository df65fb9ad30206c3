"""The libvirt node image: built from the machine's apt sources, a plain qcow2 plus kernel/initrd.

Builds (about a minute, once per recipe) into $KUBITECT_IMAGE_HOME, default
/var/tmp/kubitect-test-home, so that repeated runs reuse the cached image.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kubitect_core.images.vm_image import LB_PACKAGES, ensure_vm_image, vm_image_for_source

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="building images needs root (mmdebstrap --mode=root)"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("mmdebstrap", "mkfs.ext4", "qemu-img", "debugfs")),
        reason="needs mmdebstrap, e2fsprogs and qemu-utils",
    ),
]


def image_home() -> Path:
    """Where e2e tests keep built images (shared by all e2e tests, kept between runs)."""
    return Path(os.environ.get("KUBITECT_IMAGE_HOME", "/var/tmp/kubitect-test-home"))


@pytest.fixture(scope="session")
def vm_image():
    messages: list[str] = []
    img = ensure_vm_image(image_home(), extra_packages=LB_PACKAGES, progress=messages.append)
    return img


def test_qcow2_is_standalone_and_boot_files_are_present(vm_image):
    with vm_image.qcow2.open("rb") as fh:
        header = fh.read(32)
    magic, version, backing_offset, backing_size = struct.unpack(">4sIQI", header[:20])
    assert magic == b"QFI\xfb" and version in (2, 3)
    assert backing_offset == 0 and backing_size == 0, "the image must not depend on a backing file"
    with vm_image.kernel.open("rb") as fh:
        fh.seek(0x202)
        assert fh.read(4) == b"HdrS", "the kernel must be a bzImage for direct kernel boot"
    assert vm_image.initrd.stat().st_size > 1_000_000
    assert "root=LABEL=rootfs" in vm_image.cmdline
    assert vm_image_for_source(vm_image.qcow2) == vm_image


def test_second_call_reuses_the_cache(vm_image):
    again = ensure_vm_image(image_home(), extra_packages=LB_PACKAGES)
    assert again == vm_image


def test_filesystem_is_a_generic_cloud_image(vm_image, tmp_path):
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(vm_image.qcow2), str(raw)], check=True)
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(raw)],
                           capture_output=True, text=True)
    assert label.stdout.strip() == "rootfs"

    def debugfs(cmd: str) -> str:
        return subprocess.run(["debugfs", "-R", cmd, str(raw)], capture_output=True,
                              text=True).stdout

    assert "datasource_list: [ NoCloud, None ]" in debugfs("cat /etc/cloud/cloud.cfg.d/99-kubitect.cfg")
    assert "ssh_host_" not in debugfs("ls /etc/ssh")
    assert debugfs("cat /etc/machine-id").strip() == ""
    assert "haproxy" in debugfs("ls /usr/sbin") and "keepalived" in debugfs("ls /usr/sbin")
    wants = debugfs("ls /etc/systemd/system/multi-user.target.wants")
    assert "haproxy.service" not in wants and "keepalived.service" not in wants
    assert "cloud-init" in debugfs("ls /usr/bin")
