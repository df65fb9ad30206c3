"""Which libvirt domain type a host can really run: `kvm` only when KVM guests actually execute.

A `/dev/kvm` that exists is not enough: on nested or software-emulated hypervisors KVM guests
fail (MSR errors, emulation failures, or they spin "running" without progress). So the probe
asks libvirt's domain capabilities first and then starts a tiny transient KVM guest whose
firmware must reach its boot-device search on the serial console within a few seconds. Otherwise
the VMs use QEMU emulation (TCG).
`KUBITECT_DOMAIN_TYPE=kvm|qemu` overrides the probe for every host.
"""

from __future__ import annotations

import os
import threading
import uuid
import xml.etree.ElementTree as ET

from kubitect_core.sdk import lazy_import

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)


ENV = "KUBITECT_DOMAIN_TYPE"
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


def probe(conn: libvirt.virConnect, kernel: str | None = None, allow_guest: bool = True) -> str | None:
    """"kvm" or "qemu" for the host behind `conn` (runs on that host's worker thread); None
    when the answer needs a probe guest and `allow_guest` is False (a plan starts nothing).

    `kernel`: a Linux kernel already on the host (the base image's, for direct-boot images):
    booting it is the strong test. Without one only the firmware is tried, which a KVM that
    breaks later (in the guest kernel) passes; the env override remains for such hosts.
    """
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("kvm", "qemu"):
        return forced
    if conn.getType().lower() == "test":  # the test driver runs nothing
        return "qemu"
    if not _caps_allow_kvm(conn):
        return "qemu"
    if not allow_guest:
        return None
    seconds = KERNEL_PROBE_SECONDS if kernel else PROBE_SECONDS
    return "kvm" if guest_prints(conn, "kvm", seconds, kernel) else "qemu"
