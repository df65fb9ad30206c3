"""Waiting until a started VM is usable: its address (DHCP nodes), SSH, and cloud-init done."""

from __future__ import annotations

import asyncio
import time

import libvirt
from kubitect_plugins.libvirt.cloudinit import UPDATE_INDEX_TIMEOUT_S, UPDATE_STATUS_FILE
from kubitect_plugins.libvirt.connection import HostConnection

from kubitect_core import remote
from kubitect_core.contracts import StageContext

POLL = 2.0


class NotReady(RuntimeError):
    """A VM did not get an address, answer SSH, or finish cloud-init in time."""


async def lease_ip(hc: HostConnection, network: str, mac: str, timeout: float) -> str:
    """The IPv4 the cluster network's DHCP server leased to `mac` (nat nodes without an IP)."""
    deadline = time.monotonic() + timeout

    def leases(conn: libvirt.virConnect) -> list[dict]:
        return conn.networkLookupByName(network).DHCPLeases(mac, 0)

    while time.monotonic() < deadline:
        for lease in await hc.call(leases):
            if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and lease.get("ipaddr"):
                return lease["ipaddr"]
        await asyncio.sleep(POLL)
    raise NotReady(f"no DHCP lease for MAC {mac} on {network} within {timeout:.0f} s")


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
