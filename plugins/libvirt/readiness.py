"""Waiting until a started VM is usable: its address (DHCP nodes), SSH, and cloud-init done."""

from __future__ import annotations

import asyncio
import os
import time

from kubitect_core.sdk import StageContext, lazy_import, remote

from .cloudinit import UPDATE_INDEX_TIMEOUT_S, UPDATE_STATUS_FILE
from .connection import HostConnection
from .spec import serial_log

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

POLL = 2.0


class NotReady(RuntimeError):
    """A VM did not get an address, answer SSH, or finish cloud-init in time."""


class LeaseChanged(NotReady):
    """A DHCP node's lease is no longer the address it was set up at (and recorded with)."""


def ipv4_leases(conn: libvirt.virConnect, network: str, mac: str) -> list[str]:
    """The IPv4 addresses the network's DHCP server currently leases to `mac` (usually one)."""
    leases = conn.networkLookupByName(network).DHCPLeases(mac, 0)
    return [lease["ipaddr"] for lease in leases
            if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and lease.get("ipaddr")]


async def wait_leases(hc: HostConnection, network: str, mac: str, timeout: float) -> list[str]:
    """The IPv4 leases the cluster network's DHCP server holds for `mac`, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        found = await hc.call(lambda c: ipv4_leases(c, network, mac))
        if found:
            return found
        if time.monotonic() >= deadline:
            raise NotReady(f"no DHCP lease for MAC {mac} on {network} within {timeout:.0f} s")
        await asyncio.sleep(POLL)


def check_lease(node: str, mac: str, recorded: str | None, current: list[str], *, network: str,
                host: str) -> None:
    """Refuses a node whose DHCP lease moved away from the address it was recorded (and set up) at.

    Everything after the vms stage (HAProxy backends, certificates, kubelet's node IP) was made
    for the recorded address, so a new one is never taken over silently. No lease at all (the
    server forgot it, the node is down) proves nothing and passes: the reservation brings the
    recorded address back at the next request.
    """
    if not recorded or not current or recorded in current:
        return
    raise LeaseChanged(
        f"node {node} (MAC {mac}) was set up at {recorded}, but network {network} on host {host} now "
        f"leases it {', '.join(current)}: the DHCP reservation that kept its address was removed or "
        f"changed. kubitect has reserved {recorded} for it again; restart the node (virsh reboot "
        f"{node}) so it takes {recorded} back, then run the vms stage again. To give the cluster new "
        "addresses, destroy and re-create it.")


async def wait_ready(ctx: StageContext, ip: str, timeout: float) -> str | None:
    """Waits for SSH as the node user with the cluster key (pinning the host key), then for
    `cloud-init status --wait`: 0 is done, 2 is done with recoverable warnings, else an error.

    Returns the updateOnBoot result the node left (`ok`, `unreachable: ...`, `failed: ...`; None
    when it did not update), so the caller can warn about a node whose packages were not updated.
    """
    started = time.monotonic()
    conn = await remote.wait_reachable(ip, user=ctx.ssh.user, key=ctx.ssh.private_key,
                                       known_hosts=ctx.ssh.known_hosts, timeout=timeout)
    try:
        left = max(30.0, timeout - (time.monotonic() - started))
        res = await conn.run("cloud-init status --wait", check=False, timeout=left)
        if res.exit_status not in (0, 2):
            detail = (res.stdout + res.stderr).strip().splitlines()[-3:]
            raise NotReady(f"{ip}: cloud-init ended in error: {' / '.join(detail)}")
        update = await conn.run(f"cat {UPDATE_STATUS_FILE} 2>/dev/null", check=False, timeout=30)
        return (update.stdout or "").strip() or None
    finally:
        await conn.close()


def update_warning(status: str | None) -> str | None:
    """The warning for a node whose updateOnBoot could not run, or None when it did (or was off)."""
    if not status or status == "ok":
        return None
    if status.startswith("unreachable"):
        return (f"WARNING updateOnBoot: no package mirror reachable from the node ({status.partition(': ')[2]}); "
                f"packages were not updated (the index gets at most {UPDATE_INDEX_TIMEOUT_S} s, then the boot "
                "goes on)")
    return f"WARNING updateOnBoot: {status}"


def boot_diagnosis(conn: libvirt.virConnect, name: str, *, local: bool, lines: int = 15) -> str:
    """What a user needs when a node never answered: the domain's state and where its boot
    console is logged; on a local host, the console's last lines too (a remote host's log is read
    there, the path is named)."""
    state = "unknown"
    try:
        code = conn.lookupByName(name).state()[0]
        state = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
                 libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed"}.get(
                     code, f"state {code}")
    except libvirt.libvirtError as exc:
        state = f"not found ({exc.get_error_message()})"
    log = serial_log(name)
    out = f"domain {name} is {state}; its boot console is logged at {log}"
    if local:
        try:
            with open(log, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            tail = []
        if tail:
            out += "; its last lines:\n    " + "\n    ".join(line.rstrip() for line in tail)
    return out


# A started guest writes to its serial console within seconds: measured here 0-3 s after the
# domain runs for three TCG guests booting at once on 2 cores (kernel boot, console=ttyS0), well
# under 1 s with KVM. A guest still silent long after that is stuck before its kernel's console
# (seen in this project's TCG VM tests: a load balancer's console stayed empty for 10 minutes,
# until the 600 s boot timeout failed the run). A reset is the cure a person would apply; the
# limits are ~30x (TCG) and ~45x (KVM) the measured time, so a slow but healthy boot is not reset.
SILENT_CONSOLE_S = {"kvm": 45.0, "qemu": 90.0}
CONSOLE_RESETS = 2


def console_spoke(log: str) -> bool:
    """Whether the guest wrote anything to its serial console since its QEMU started (the log is
    truncated at start: the domain's serial `<log append="off">`)."""
    try:
        return os.stat(log).st_size > 0
    except OSError:
        return False


async def watch_console(hc: HostConnection, name: str, *, log: str, silent_after: float,
                        resets: int = CONSOLE_RESETS, progress=None, poll: float = POLL) -> int:
    """Watches a guest kubitect just started on a local host until its console speaks: resets it
    (up to `resets` times) when it stays silent `silent_after` seconds while running, and raises
    NotReady at once when QEMU paused it on a disk I/O error (a full pool), which no wait cures.

    Returns the number of resets done. A guest paused or shut off by someone else is not touched
    (the readiness wait then reports its state). Runs beside `wait_ready`, which bounds it.
    """
    done = 0
    since = time.monotonic()
    while not console_spoke(log):
        await asyncio.sleep(poll)
        state, reason = await hc.call(lambda c: c.lookupByName(name).state())
        if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
            raise NotReady(f"domain {name} was paused by QEMU after a disk I/O error: is the storage pool's "
                           "disk full? Free space, then `virsh resume` it or run the vms stage again")
        if state != libvirt.VIR_DOMAIN_RUNNING:
            since = time.monotonic()
            continue
        if console_spoke(log) or time.monotonic() - since < silent_after:
            continue
        if done >= resets:
            return done
        done += 1
        if progress is not None:
            progress(f"its console stayed silent {silent_after:.0f} s after start: resetting it "
                     f"({done} of {resets})")
        await hc.call(lambda c: c.lookupByName(name).reset(0))
        since = time.monotonic()
    return done


async def ready_watched(ready, watch):
    """Awaits the readiness wait `ready` while `watch` (watch_console) runs beside it: the watch's
    NotReady ends the wait at once; the wait's end (either way) stops the watch."""
    ready_task, watch_task = asyncio.ensure_future(ready), asyncio.ensure_future(watch)
    try:
        await asyncio.wait({ready_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if watch_task.done() and watch_task.exception() is not None:
            raise watch_task.exception()
        return await ready_task
    finally:
        for task in (ready_task, watch_task):
            if not task.done():
                task.cancel()
        await asyncio.gather(ready_task, watch_task, return_exceptions=True)
