"""Shared pieces of the real-VM tier: a lab namespace with libvirtd and a bridge, the kubitect CLI
run inside it, and what libvirt still holds of a cluster.

Everything networked stays in the lab namespace: the bridge carries the gateway address there,
libvirtd runs there (its `qemu:///system` socket is a file, so a `local` host reaches it), and the
kubitect CLI runs there too, so its SSH to the VMs and the conformance prober never leave it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubitect_plugins.libvirt.spec import serial_log

BINARIES = ("ip", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "ssh", "mmdebstrap", "mkfs.ext4",
            "qemu-img")
IMAGE_HOME_ENV = "KUBITECT_IMAGE_HOME"
DEFAULT_IMAGE_HOME = Path("/var/tmp/kubitect-test-home")


def require(binaries: Sequence[str] = BINARIES) -> None:
    """Skips (with the missing piece named) when this machine cannot run real VMs."""
    if os.geteuid() != 0:
        pytest.skip("e2e: needs root (namespaces, libvirtd)")
    for name in binaries:
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
            pytest.skip(f"e2e: '{name}' is not installed")
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")


def lb_image():
    """The locally built Debian 12 image with keepalived and HAProxy preinstalled (cached; the VMs
    have no internet, so nothing could be installed on them later)."""
    from kubitect_core.images.vm_image import LB_PACKAGES, ensure_vm_image

    home = Path(os.environ.get(IMAGE_HOME_ENV, str(DEFAULT_IMAGE_HOME)))
    return ensure_vm_image(home, extra_packages=LB_PACKAGES)


def skip_if_libvirtd_runs() -> None:
    """One system libvirtd per machine: a lab of another run owns the socket, so this one cannot start."""
    from kubitect_core.lab import libvirtd

    if libvirtd.socket_answers():
        pytest.skip("e2e: another libvirtd already serves /run/libvirt/libvirt-sock (another lab); "
                    "one system libvirtd per machine")


@contextmanager
def bridge_lab(name: str, prefix: str, bridge: str | None = None, gateway_cidr: str | None = None) -> Iterator:
    """A lab namespace with libvirtd and a bridge holding the gateway address (without `bridge`:
    none, for a nat or route network, which brings its own); always torn down."""
    from kubitect_core.lab.harness import Lab

    lab = Lab(name, libvirt=True, prefix=prefix)
    lab.up()
    try:
        steps = [["ip", "link", "set", "lo", "up"]]
        if bridge:
            steps += [["ip", "link", "add", bridge, "type", "bridge"],
                      ["ip", "addr", "add", str(gateway_cidr), "dev", bridge],
                      ["ip", "link", "set", bridge, "up"]]
        for argv in steps:
            lab.run(argv, check=True)
        yield lab
    finally:
        lab.down()


def kubitect(lab, home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Runs the kubitect CLI inside the lab with KUBITECT_HOME=home (text output captured)."""
    exe = str(Path(sys.executable).parent / "kubitect")
    env = {**os.environ, "KUBITECT_HOME": str(home)}
    return run_cli(lab, [exe, *args], home=home, timeout=timeout, env=env)


def run_cli(lab, argv: Sequence[str], *, home: Path, timeout: float, **kw) -> subprocess.CompletedProcess:
    """`lab.run(argv)` with text output captured; a run still going after `timeout` is killed and
    returned as exit -9 with what it printed, then what the lab shows of it (`diagnosis`), so
    the test's failure message says where it stood instead of only that it timed out."""
    try:
        return lab.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        def text(out) -> str:
            return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")

        shown = (f"{text(exc.stdout)}\n[killed: still running after {timeout:.0f} s]\n"
                 f"{diagnosis(lab, home)}")
        return subprocess.CompletedProcess(exc.cmd, -9, shown, text(exc.stderr))


def diagnosis(lab, home: Path, *, console_lines: int = 4, log_lines: int = 30) -> str:
    """Each domain's state and the last lines of its console, and the tail of the newest run
    log under `home`: what a hung run leaves to read."""
    out = []
    listing = lab.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                      text=True, timeout=30)
    for dom in listing.stdout.split():
        state = lab.run(["virsh", "-c", "qemu:///system", "domstate", "--reason", dom], capture_output=True,
                        text=True, timeout=30).stdout.strip()
        log = Path(serial_log(dom))
        size = log.stat().st_size if log.exists() else None
        tail = log.read_text(errors="replace").splitlines()[-console_lines:] if size else []
        out.append(f"domain {dom}: {state}; console {size} bytes" + "".join(f"\n    | {t}" for t in tail))
    logs = sorted(home.glob("clusters/*/logs/*.log"), key=lambda p: p.stat().st_mtime)
    if logs:
        tail = logs[-1].read_text(errors="replace").splitlines()[-log_lines:]
        out.append(f"run log {logs[-1]} (last {len(tail)} lines):" + "".join(f"\n    | {t}" for t in tail))
    return "\n".join(out)


def timed(fn, *args, **kw) -> tuple[float, object]:
    """(seconds, result) of one call, for the measured numbers a test prints."""
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return round(time.monotonic() - t0, 1), out


def virsh(lab, *args: str) -> str:
    """virsh against the lab's libvirtd; its stdout (raises on failure)."""
    return lab.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=True).stdout


def leftovers(lab, cluster: str) -> dict[str, list[str]]:
    """Every domain, network, pool and volume whose name carries the cluster's name, and the boot
    console logs kubitect named for its domains (destroy deletes them)."""
    found: dict[str, list[str]] = {}
    for kind, args in (("domains", ("list", "--all", "--name")), ("networks", ("net-list", "--all", "--name")),
                       ("pools", ("pool-list", "--all", "--name"))):
        found[kind] = [n for n in virsh(lab, *args).split() if cluster in n]
    vols = []
    for pool in virsh(lab, "pool-list", "--all", "--name").split():
        listing = lab.run(["virsh", "-c", "qemu:///system", "vol-list", pool], capture_output=True, text=True)
        vols += [f"{pool}/{line.split()[0]}" for line in listing.stdout.splitlines()[2:]
                 if line.strip() and cluster in line]  # an inactive pool lists nothing (and fails)
    found["volumes"] = vols
    found["console logs"] = sorted(str(p) for p in Path(serial_log(cluster)).parent.glob(
        Path(serial_log(f"{cluster}-*")).name))
    return {k: v for k, v in found.items() if v}
