"""The Debian 12 disk image libvirt nodes boot from, built offline from the machine's apt sources.

One cache entry, `<home>/images/vm-<hash>/`, holds `disk.qcow2` (an ext4 filesystem labelled
`rootfs` on the whole disk, no partition table, no backing file), the kernel and initrd copied
out of it, and `image.json` (a manifest). libvirt boots it with direct kernel boot
(`<kernel>`, `<initrd>`, `<cmdline>root=LABEL=rootfs rw console=ttyS0</cmdline>`); cloud-init
(NoCloud seed ISO) sets hostname, users, keys and static addresses on first boot.

Using it as a node image: set `nodeTemplate.os.source` to the qcow2 path printed by
`kubitect image build --kind vm` (e.g. `~/.kubitect/images/vm-<hash>/disk.qcow2`). A provider
that finds `image.json` next to the source (see `vm_image_for_source`) boots it with the kernel,
initrd and command line the manifest names; any other qcow2 is booted from its own disk.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubitect_core.images.cache import cached_build, recipe_hash, tree_size
from kubitect_core.images.rootfs import NOT_ENABLED, SUITE, keep_disabled, run_mmdebstrap, strip_machine_identity
from kubitect_core.paths import images_dir

# Bump when the build steps below change in a way that changes the result.
# 2: resolvconf, and no build machine's /etc/resolv.conf left in the image.
BUILD_VERSION = 2

VM_PACKAGES: tuple[str, ...] = (
    "linux-image-cloud-amd64", "systemd-sysv", "udev", "dbus", "initramfs-tools", "cloud-init",
    "openssh-server", "ifupdown", "iproute2", "sudo", "netbase", "e2fsprogs", "cloud-guest-utils",
    "procps", "qemu-guest-agent", "ca-certificates", "curl",
    # ifupdown applies the `dns-nameservers` cloud-init writes only through resolvconf.
    "resolvconf",
)
LB_PACKAGES: tuple[str, ...] = ("keepalived", "haproxy")
# Installed for the load-balancer plugin, which enables them on the nodes that need them
# (until then kept disabled: rootfs.NOT_ENABLED, keep_disabled).

ROOT_LABEL = "rootfs"
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=ttyS0"
MANIFEST = "image.json"

_CLOUD_CFG = """\
# Written by kubitect's image builder.
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
"""
_FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VmImage:
    """A built VM image: what a libvirt domain needs for direct kernel boot."""

    qcow2: Path
    kernel: Path
    initrd: Path
    recipe_hash: str
    cmdline: str = KERNEL_CMDLINE


def vm_recipe(extra_packages: Sequence[str] = ()) -> dict:
    """Everything that decides the image content; its hash names the cache entry."""
    return {
        "kind": "vm",
        "suite": SUITE,
        "variant": "apt",
        "packages": sorted(set(VM_PACKAGES) | set(extra_packages)),
        "root_label": ROOT_LABEL,
        "build_version": BUILD_VERSION,
    }


def ensure_vm_image(
    home: Path, *, extra_packages: Sequence[str] = (), progress: Progress | None = None
) -> VmImage:
    """The cached VM image, built (about a minute) only when its recipe is new.

    Pass `extra_packages=LB_PACKAGES` to preinstall keepalived and HAProxy (left disabled).
    """
    recipe = vm_recipe(extra_packages)
    path, info = cached_build(
        images_dir(Path(home)), "vm", recipe, lambda tmp: _build(tmp, recipe, progress), progress
    )
    return _image_from_dir(path, info.get("hash") or path.name.rpartition("-")[2])


def vm_image_for_source(source: str | Path) -> VmImage | None:
    """The kubitect image a `nodeTemplate.os.source` path points at, or None for a foreign image.

    Lets a provider decide between direct kernel boot (our image: manifest next to the qcow2)
    and booting the disk's own bootloader (a cloud image from elsewhere).
    """
    path = Path(source).expanduser()
    manifest = path.parent / MANIFEST
    if not path.is_file() or not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        return None
    if (path.parent / data.get("qcow2", "")).resolve() != path.resolve():
        return None
    return _image_from_dir(path.parent, data.get("hash", ""))


def _image_from_dir(path: Path, digest: str) -> VmImage:
    data = json.loads((path / MANIFEST).read_text())
    return VmImage(
        qcow2=path / data["qcow2"], kernel=path / data["kernel"], initrd=path / data["initrd"],
        recipe_hash=digest, cmdline=data.get("cmdline", KERNEL_CMDLINE),
    )


def _build(out: Path, recipe: dict, progress: Progress | None) -> dict:
    say = progress or (lambda _m: None)
    tree = out / ".tree"
    tree.mkdir()
    try:
        run_mmdebstrap(
            tree, suite=recipe["suite"], variant=recipe["variant"], packages=recipe["packages"],
            progress=progress,
        )
        finish_vm_tree(tree)
        kernel, initrd = _copy_boot_files(tree, out)
        raw = out / "disk.raw"
        size = _disk_size(tree)
        say(f"mkfs.ext4 -d ({size // 2**20} MiB filesystem)")
        with open(raw, "wb") as fh:
            fh.truncate(size)
        _run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(tree), str(raw)])
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    say("qemu-img convert -O qcow2")
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / "disk.qcow2")])
    raw.unlink()
    manifest = {
        "hash": recipe_hash(recipe), "qcow2": "disk.qcow2", "kernel": kernel.name, "initrd": initrd.name,
        "cmdline": KERNEL_CMDLINE, "virtual_size_bytes": size,
        "qcow2_bytes": (out / "disk.qcow2").stat().st_size,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return {"qcow2_bytes": manifest["qcow2_bytes"], "virtual_size_bytes": size}


def finish_vm_tree(root: Path) -> None:
    """Make the tree a generic cloud image: no identity, cloud-init in charge of it.

    Why: every VM boots from a copy; host keys and machine-id must be made per VM (cloud-init
    and systemd do it on first boot), and without the NoCloud datasource list and a C.UTF-8
    locale cloud-init ends in error on these images.
    """
    strip_machine_identity(root)
    # The build copied this machine's resolver in; a node must use the nameservers of its own
    # network (cloud-init -> ifupdown -> resolvconf), not a resolver it cannot reach, where every
    # look-up (apt's included) waits for a timeout.
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    if (root / "sbin/resolvconf").exists() or (root / "usr/sbin/resolvconf").exists():
        resolv.symlink_to("../run/resolvconf/resolv.conf")
    else:
        resolv.write_text("")
    cfg = root / "etc/cloud/cloud.cfg.d"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "99-kubitect.cfg").write_text(_CLOUD_CFG)
    (root / "etc/fstab").write_text(_FSTAB)
    keep_disabled(root, NOT_ENABLED)


def _copy_boot_files(tree: Path, out: Path) -> tuple[Path, Path]:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError(f"no kernel or initrd in {tree / 'boot'}: is linux-image installed?")
    kernel, initrd = out / "vmlinuz", out / "initrd.img"
    shutil.copyfile(kernels[-1], kernel)
    shutil.copyfile(initrds[-1], initrd)
    kernel.chmod(0o644)
    initrd.chmod(0o644)
    return kernel, initrd


def _disk_size(tree: Path) -> int:
    """Room for the tree plus a quarter and 512 MiB, in whole 256 MiB steps (grown per node later)."""
    need = tree_size(tree) * 1.25 + 512 * 2**20
    step = 256 * 2**20
    return int(math.ceil(need / step) * step)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
