"""The root filesystem directory that systemd-nspawn nodes boot from.

Built once per recipe with mmdebstrap from the machine's own apt sources (never a hard-coded
mirror) and cached under `<home>/images/rootfs-<hash>/`. One read-only rootfs serves every node
(nspawn's `--volatile=overlay` gives each node its own writable layer), so it must carry nothing
node-specific: no hostname, an empty machine-id, no SSH host keys (a oneshot unit makes them on
each node's first boot).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kubitect_core.images.apt_sources import machine_sources
from kubitect_core.images.cache import cached_build
from kubitect_core.lab.netns import in_root_netns, root_netns_path
from kubitect_core.paths import images_dir

SUITE = "bookworm"
# Bump when the build steps below change in a way that changes the result.
BUILD_VERSION = 2

ROOTFS_PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "keepalived", "haproxy", "iproute2",
    "procps", "sudo", "curl", "python3", "iputils-ping", "psmisc", "ca-certificates", "util-linux",
    # Debian's etcd: the lab's control planes run a REAL etcd (started from kubeadm's static-pod
    # manifest by the lab's kubelet stand-in), so member add/remove, quorum, snapshot and restore
    # are real there; etcdctl is what kubitect_core.kube.etcd runs on a control plane.
    "etcd-server", "etcd-client",
)
# Installed so the plugins find them, but left disabled: each is enabled only where it is needed.
NOT_ENABLED = ("keepalived.service", "haproxy.service", "etcd.service")

KEYGEN_UNIT = "kubitect-ssh-keygen.service"
_KEYGEN_UNIT_TEXT = """\
[Unit]
Description=Generate this node's SSH host keys (the shared kubitect image ships none)
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""
_SSH_DROPIN_TEXT = f"""\
[Unit]
Wants={KEYGEN_UNIT}
After={KEYGEN_UNIT}
"""

Progress = Callable[[str], None]


def rootfs_recipe(extra_packages: Sequence[str] = ()) -> dict:
    """Everything that decides the rootfs content; its hash names the cache entry."""
    return {
        "kind": "rootfs",
        "suite": SUITE,
        "variant": "minbase",
        "packages": sorted(set(ROOTFS_PACKAGES) | set(extra_packages)),
        "build_version": BUILD_VERSION,
    }


def ensure_rootfs(
    home: Path, *, extra_packages: Sequence[str] = (), progress: Progress | None = None
) -> Path:
    """The cached rootfs directory for nspawn nodes, built (about a minute) only if missing.

    Rebuilt only when the recipe (packages, suite, build version) changes. The build time is
    reported through `progress` and recorded in `<path>.json` (key `build_seconds`).
    """
    recipe = rootfs_recipe(extra_packages)
    path, _info = cached_build(
        images_dir(Path(home)), "rootfs", recipe,
        lambda tmp: _build_rootfs(tmp, recipe, progress), progress,
    )
    return path


def _build_rootfs(target: Path, recipe: dict, progress: Progress | None) -> dict:
    run_mmdebstrap(
        target, suite=recipe["suite"], variant=recipe["variant"], packages=recipe["packages"],
        progress=progress,
    )
    finish_node_tree(target)
    return {"packages": recipe["packages"]}


def finish_node_tree(root: Path) -> None:
    """Strip what makes a tree belong to one machine, and keep LB daemons disabled.

    Why: the same tree boots many nodes; a baked-in hostname overrides nspawn's `--hostname`,
    shared host keys would make every node look like the same SSH server.
    """
    strip_machine_identity(root)
    units = root / "etc/systemd/system"
    (units / KEYGEN_UNIT).write_text(_KEYGEN_UNIT_TEXT)
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    _symlink(f"/etc/systemd/system/{KEYGEN_UNIT}", wants / KEYGEN_UNIT)
    dropin = units / "ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "kubitect-keygen.conf").write_text(_SSH_DROPIN_TEXT)
    keep_disabled(root)


def strip_machine_identity(root: Path) -> None:
    """Removes what makes a built tree one machine: hostname, machine-id, SSH host keys.

    Why: one tree (rootfs or VM image) boots many nodes; each must make its own identity on
    first boot, or every node would look like the same host and the same SSH server.
    """
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()


def keep_disabled(root: Path, units: Sequence[str] = NOT_ENABLED) -> None:
    """Removes the enablement links package installation made for `units` (default: the LB daemons).

    Why: keepalived and HAProxy are preinstalled on every node but must only run where the
    load-balancer plugin configures and enables them.
    """
    system = root / "etc/systemd/system"
    for wants in system.glob("*.wants"):
        for unit in units:
            link = wants / unit
            if link.is_symlink():  # dangling here (it points into the tree): glob() would skip it
                link.unlink()


def _symlink(dest: str, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(dest)


def run_mmdebstrap(
    target: Path,
    *,
    suite: str,
    variant: str,
    packages: Sequence[str],
    progress: Progress | None = None,
    extra_args: Sequence[str] = (),
) -> float:
    """Run mmdebstrap into the empty directory `target` from the machine's own apt sources.

    Why the care: downloads need the root network namespace (a lab namespace has no route out),
    so from inside one we hop back into the root one with nsenter; that only downloads and
    changes nothing there. mmdebstrap itself keeps services from starting during installation
    (its own policy-rc.d in the chroot), so no daemon starts on the build machine.
    Returns the seconds it took.
    """
    sources = "\n".join(machine_sources(suite)) + "\n"
    argv = [
        "mmdebstrap", "--mode=root", f"--variant={variant}", "--format=directory",
        f"--include={','.join(packages)}", *extra_args, suite, str(target), "-",
    ]
    if not in_root_netns():
        argv = ["nsenter", f"--net={root_netns_path()}", "--", *argv]
    if os.geteuid() != 0:
        raise RuntimeError("building images needs root (mmdebstrap --mode=root)")
    say = progress or (lambda _msg: None)
    say(f"mmdebstrap {variant} {suite}: {len(packages)} packages -> {target}")
    started = time.monotonic()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(sources)
    proc.stdin.close()
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-30:]
        if line.startswith(("I: ", "E: ", "W: ")):
            say(line)
    if proc.wait() != 0:
        raise RuntimeError(f"mmdebstrap failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return time.monotonic() - started
