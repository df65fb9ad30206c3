"""Which libvirt domain type a host can really run: `kvm` only when KVM guests actually execute.

A `/dev/kvm` that exists is not enough: on nested or software-emulated hypervisors KVM guests
fail (MSR errors, emulation failures, or they spin "running" without progress). So the probe
asks libvirt's domain capabilities first and then starts a tiny transient KVM guest whose
firmware must reach its boot-device search on the serial console within a few seconds. Otherwise
the VMs use QEMU emulation (TCG).
`KUBITECT_DOMAIN_TYPE=kvm|qemu` overrides the probe for every host.

Only a booted kernel proves KVM: a broken nested KVM runs the firmware and then hangs in the
guest kernel. So the probe boots the base image's kernel, or this machine's own (for a local
host); with neither at hand and a firmware that runs, it stops at once and says why and how to
override, instead of guessing "kvm" and letting every VM hang until its readiness timeout.

A probe costs seconds (a failing KVM probe waits its whole window), so its answer is remembered
in the kubitect home per host identity (`host_identity`: URI, hostname, libvirt and QEMU versions,
host and KVM capabilities, and for a local host the kernel release and /dev/kvm's boot time) and
asked again only when one of those changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from kubitect_core.sdk import StageError, lazy_import, write_atomic

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)


ENV = "KUBITECT_DOMAIN_TYPE"
CACHE_FILE = "kvm-probe.json"  # under <kubitect home>/cache/
PROBE_SECONDS = 8.0


def _caps_allow_kvm(conn: libvirt.virConnect) -> bool:
    try:
        xml = conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
    except libvirt.libvirtError:
        return False
    root = ET.fromstring(xml)
    return (root.findtext("domain") or "") == "kvm"


# SeaBIOS prints these on the serial line (bios useserial) once POST is done and it looks for a
# boot device: the guest CPU has run real-mode and 32-bit code for a while.
BIOS_MARKERS = (b"Booting from", b"No bootable device")
# A Linux kernel booted with no root device ends in this panic: it ran its whole early boot.
KERNEL_MARKERS = (b"VFS: Unable to mount root", b"Kernel panic")
KERNEL_PROBE_SECONDS = 12.0  # measured: TCG reaches the panic in ~5 s, working KVM in ~1 s


def guest_prints(conn: libvirt.virConnect, virt_type: str, seconds: float = PROBE_SECONDS,
                 kernel: str | None = None) -> bool:
    """Starts a tiny transient guest (no disk, no network) and reports whether its serial
    console shows it got far: with `kernel` (a path on the host), a Linux kernel that boots to
    its "no root device" panic; else SeaBIOS reaching its boot-device search.

    Why the console and not the domain state: a guest on a broken KVM stays "running" while
    its CPU spins without progress. Reading the console goes through libvirt, so it works on
    remote hosts as well.
    """
    name = f"kubitect-probe-{virt_type}-{uuid.uuid4().hex[:8]}"
    if kernel:
        boot, memory, markers = (f"<kernel>{kernel}</kernel><cmdline>console=ttyS0 panic=-1</cmdline>",
                                 256, KERNEL_MARKERS)
    else:
        boot, memory, markers = "<bios useserial='yes'/>", 32, BIOS_MARKERS
    xml = (f"<domain type='{virt_type}'><name>{name}</name><memory unit='MiB'>{memory}</memory>"
           f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type>{boot}</os>"
           "<devices><serial type='pty'><target port='0'/></serial>"
           "<console type='pty'><target type='serial' port='0'/></console></devices></domain>")
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError:
        return False
    buf = bytearray()
    seen = threading.Event()
    stream = conn.newStream(0)

    def read() -> None:
        try:
            while not seen.is_set():
                data = stream.recv(4096)
                if not isinstance(data, bytes) or not data:
                    return
                buf.extend(data)
                if any(m in buf for m in markers):
                    seen.set()
        except libvirt.libvirtError:
            return

    reader = threading.Thread(target=read, name=f"{name}-console", daemon=True)
    try:
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        reader.start()
        dom.resume()
        seen.wait(seconds)
        return seen.is_set()
    except libvirt.libvirtError:
        return False
    finally:
        seen.set()
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        if reader.is_alive():
            reader.join(2.0)


class ProbeUnproven(StageError):
    """libvirt offers KVM, the firmware runs, and no kernel is at hand to prove a guest really runs."""


def _is_local(uri: str) -> bool:
    return not urlsplit(uri).hostname


def host_identity(conn: libvirt.virConnect) -> dict[str, str]:
    """What the probe's answer depends on; a new kernel, QEMU, libvirt or KVM module changes it.

    A remote host is known by what libvirt reports (its versions and the capabilities XML, which
    names the host CPU and what KVM offers); a local one also by the running kernel and the
    /dev/kvm node, which is made anew at every boot.
    """
    def safe(fn) -> str:
        try:
            return str(fn())
        except libvirt.libvirtError as exc:
            return f"error: {exc.get_error_code()}"

    uri = conn.getURI()
    ident = {
        "uri": uri,
        "hostname": safe(conn.getHostname),
        "libvirt": safe(conn.getLibVersion),
        "qemu": safe(conn.getVersion),
        "capabilities": hashlib.sha256(safe(conn.getCapabilities).encode()).hexdigest()[:16],
        "kvm": hashlib.sha256(safe(lambda: conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0))
                              .encode()).hexdigest()[:16],
    }
    if _is_local(uri):
        ident["kernel"] = os.uname().release
        try:
            st = os.stat("/dev/kvm")
            ident["dev_kvm"] = f"{st.st_rdev}:{int(st.st_ctime)}"
        except OSError:
            ident["dev_kvm"] = "absent"
    return ident


def _key(ident: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def remembered(cache: Path | None, ident: dict[str, str]) -> dict | None:
    """The answer recorded for this host identity, or None (no cache, unreadable, or changed)."""
    if cache is None:
        return None
    try:
        entry = json.loads(cache.read_text()).get(_key(ident))
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(entry, dict) and entry.get("answer") in ("kvm", "qemu"):
        return entry
    return None


def remember(cache: Path | None, ident: dict[str, str], answer: str, proof: str) -> None:
    if cache is None:
        return
    try:
        data = json.loads(cache.read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[_key(ident)] = {"answer": answer, "proof": proof, "host": ident.get("hostname", ""),
                         "uri": ident.get("uri", ""), "at": datetime.now(UTC).isoformat(timespec="seconds")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o644)


def _own_kernel() -> Path | None:
    """This machine's kernel, when it is readable (for a probe of the local host)."""
    release = os.uname().release
    for candidate in (Path(f"/boot/vmlinuz-{release}"), Path("/boot/vmlinuz")):
        if candidate.is_file() and os.access(candidate, os.R_OK):
            return candidate
    return None


def _with_kernel_copy(kernel: Path, fn):
    """Runs fn(path) with a world-readable copy of `kernel` (QEMU runs as its own user, and libvirt
    would relabel the original under /boot)."""
    folder = tempfile.mkdtemp(prefix="kubitect-probe-")
    try:
        os.chmod(folder, 0o755)
        copy = Path(folder) / "vmlinuz"
        shutil.copyfile(kernel, copy)
        os.chmod(copy, 0o644)
        return fn(str(copy))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unproven_message(host: str) -> str:
    return (f"host {host}: libvirt offers KVM and a KVM guest's firmware runs, but there is no kernel to "
            f"prove that KVM guests really run here (the image has no kernel file beside it, and no "
            f"readable /boot/vmlinuz on this machine). A nested or emulated KVM passes the firmware and "
            f"then hangs in the guest kernel. Set {ENV}=kvm if KVM guests run on this host, or {ENV}=qemu "
            f"to emulate (slower); or use an image with its kernel beside it (kubitect image build).")


def probe(conn: libvirt.virConnect, kernel: str | None = None, allow_guest: bool = True,
          cache: Path | None = None) -> str | None:
    """"kvm" or "qemu" for the host behind `conn` (runs on that host's worker thread); None
    when the answer needs a probe guest and `allow_guest` is False (a plan starts nothing).

    `kernel`: a Linux kernel already on the host (the base image's, for direct-boot images):
    booting it is the proof. Without one, a local host's own kernel is used; with none at all,
    a firmware that fails says "qemu" and one that runs raises ProbeUnproven (the reason and the
    override). `cache`: the file that remembers answers per host identity.
    """
    return probe_detail(conn, kernel, allow_guest, cache)[0]


def probe_detail(conn: libvirt.virConnect, kernel: str | None = None, allow_guest: bool = True,
                 cache: Path | None = None) -> tuple[str | None, str]:
    """`probe`, with how the answer was reached ("override", "capabilities", "remembered ...",
    "kernel boot", "firmware") for the progress line."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("kvm", "qemu"):
        return forced, "override"
    if conn.getType().lower() == "test":  # the test driver runs nothing
        return "qemu", "test driver"
    if not _caps_allow_kvm(conn):
        return "qemu", "capabilities"
    ident = host_identity(conn)
    known = remembered(cache, ident)
    if known:
        return known["answer"], f"remembered from {known.get('at', '?')}"
    if not allow_guest:
        return None, "not probed"
    started = time.monotonic()
    if kernel:
        answer, proof = ("kvm" if guest_prints(conn, "kvm", KERNEL_PROBE_SECONDS, kernel) else "qemu"), "kernel boot"
    elif _is_local(ident["uri"]) and (own := _own_kernel()) is not None:
        ok = _with_kernel_copy(own, lambda path: guest_prints(conn, "kvm", KERNEL_PROBE_SECONDS, path))
        answer, proof = ("kvm" if ok else "qemu"), "kernel boot"
    elif not guest_prints(conn, "kvm", PROBE_SECONDS):
        answer, proof = "qemu", "firmware"  # not even the firmware runs: emulation, proven enough
    else:
        raise ProbeUnproven(unproven_message(ident.get("hostname") or ident["uri"]))
    remember(cache, ident, answer, proof)
    return answer, f"{proof}, {time.monotonic() - started:.1f} s"
