"""The vms layer of the libvirt provider: domains defined, booted and reachable over SSH, per host.

Record (the vms stage's slice for this provider): `hosts[h] = {uri, ssh, domain_type}`,
`nodes[name] = {name, host, role, id, ip, mac, dhcp, domain_type, volumes, ready}`, what the
engine builds the as-built topology from. The libvirt objects themselves are made in `vms_layer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from pathlib import Path
from typing import Any

from kubitect_core.sdk import Change, RemoteError, StageContext
from kubitect_core.sdk.images import vm_image_for_source

from . import hosttype, images, network_layer, node_keys, storage_layer, vms_layer
from .adopted import adopted_seeds, mac_for
from .connection import HostConnection
from .hosts import ConvergingLayer, Hosts, nodes_on
from .readiness import (
    SILENT_CONSOLE_S,
    LeaseChanged,
    NotReady,
    boot_diagnosis,
    check_lease,
    ipv4_leases,
    ready_watched,
    update_warning,
    wait_leases,
    wait_ready,
    watch_console,
)
from .spec import HostSpec, Names, NetSpec, attr, image_spec, net_spec, serial_log

DEFAULT_MAX_BOOTING = 3  # 2-core hosts: more VMs booting at once only slows all of them


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(str(text))
    except ValueError:
        return False
    return True


def remove_console_logs(domains: set[str]) -> None:
    """Deletes the boot console logs kubitect named in these domains' XML (`spec.serial_log`) on
    this machine: they are kubitect's files, and destroy leaves none behind. (On a remote host
    they stay: libvirt has no call that deletes a file; the path is in the domain XML.)"""
    for name in domains:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(serial_log(name))


class VmsLayer(ConvergingLayer):
    """The `vms` layer (`kubitect_core.sdk.MachineLayer`) on the hosts that select libvirt.

    Leaves every node reachable over SSH with the cluster key at the address it is recorded
    with (a DHCP node: its lease, kept stable by a reservation), its host key pinned first. A plan
    lists which domains apply would define, change, start or delete, and starts nothing.
    """

    def __init__(self, hosts: Hosts):
        super().__init__(hosts)
        self._domain_types: dict[tuple[str, str], str] = {}  # (host, uri) -> "kvm" | "qemu"

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Removes the cluster's domains on each host (found by tag even without a record), and
        the pinned host keys of their nodes."""
        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            h = spec.name
            recorded = [n for n, v in ctx.record.get("nodes", {}).items() if v.get("host") == h]
            out = await hc.call(lambda c: vms_layer.destroy(c, cluster=ctx.cluster, host=h, recorded=recorded))
            gone = {*recorded, *(c.name for c in out if c.kind == "domain")}
            if hc.guests_here:
                remove_console_logs(gone)
            node_keys.forget(ctx, node_keys.store_for(ctx),
                             {n: ctx.record.get("nodes", {}).get(n, {}).get("ip") for n in gone})
            for n in recorded:
                ctx.record["nodes"].pop(n, None)
            ctx.record.get("hosts", {}).pop(h, None)
            return out

        return await self.hosts.each(ctx, hosts, one, record=False)

    async def _domain_type(self, ctx: StageContext, host: str, hc: HostConnection,
                           kernel: str | None, dry_run: bool) -> str:
        """The host's domain type: the env override, else the recorded one or that of the
        cluster's existing domains there (so a re-apply never flips it), else the probe's answer
        (cached for the run). `kernel` is the base image's kernel on the host, which the probe
        boots. A plan starts no guest: unknown there, it says "auto" (decided at apply)."""
        forced = os.environ.get(hosttype.ENV, "").strip().lower()
        if forced in ("kvm", "qemu"):
            return forced
        recorded = ctx.record.get("hosts", {}).get(host, {}).get("domain_type")
        if recorded:
            return recorded
        existing = await hc.call(lambda c: vms_layer.existing_domain_type(c, ctx.cluster))
        if existing:
            return existing
        key = (host, hc.uri)
        if key not in self._domain_types:
            cache = Path(ctx.home) / "cache" / hosttype.CACHE_FILE  # remembered per host identity
            found, how = await hc.call(lambda c: hosttype.probe_detail(c, kernel, allow_guest=not dry_run,
                                                                       cache=cache))
            if found is None:
                return "auto"
            self._domain_types[key] = found
            ctx.progress(host, f"domain type {found} ({how})")
        return self._domain_types[key]

    def template(self, ctx: StageContext) -> vms_layer.NodeTemplate:
        """What every node's domain and cloud-init share (user, key, boot mode, CPU mode)."""
        cfg = ctx.config
        source = image_spec(cfg).source
        kernel_boot, cmdline = False, vms_layer.DEFAULT_CMDLINE
        local = images.cached(source, ctx.home)  # a path, or the cache entry serving the URL
        if local is not None:
            kernel_boot = local.kernel is not None
            built = vm_image_for_source(local.path)  # kubitect's own image: its manifest names the cmdline
            if built is not None:
                cmdline = built.cmdline
        return vms_layer.NodeTemplate(
            cmdline=cmdline,
            user=ctx.ssh.user or attr(cfg, "cluster.node_template.user", "k8s"),
            public_key=ctx.ssh.public_key_text(),
            update_on_boot=bool(attr(cfg, "cluster.node_template.update_on_boot", True)),
            cpu_mode=str(attr(cfg, "cluster.node_template.cpu_mode", "custom")),
            kernel_boot=kernel_boot)

    async def _converge(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        net = net_spec(ctx.config)
        tpl = self.template(ctx)
        topo = ctx.topology
        names = Names(ctx.cluster)
        sem = asyncio.Semaphore(int(ctx.options.get("max_booting", DEFAULT_MAX_BOOTING)))
        previous = dict(ctx.record.get("nodes", {}))
        keys = node_keys.store_for(ctx)

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            h = spec.name
            nodes = [(n, mac_for(ctx, topo, n)) for n in nodes_on(ctx, h)]
            wanted_pools = storage_layer.desired_pools(ctx.cluster, spec)
            pool_dirs = await hc.call(lambda c: {p: storage_layer.pool_path(c, p, d)
                                                 for p, d in wanted_pools.items()})
            kernel = str(Path(pool_dirs[names.main_pool]) / names.base_kernel) if tpl.kernel_boot else None
            dtype = await self._domain_type(ctx, h, hc, kernel, dry_run)
            res = await hc.call(lambda c: vms_layer.converge(
                c, cluster=ctx.cluster, host=h, net=net, tpl=tpl, nodes=nodes, domain_type=dtype,
                pool_dirs=pool_dirs, dry_run=dry_run, host_keys=keys, adopted_seeds=adopted_seeds(ctx)))
            if dry_run:
                return res.changes
            ctx.record["hosts"].setdefault(h, {})["domain_type"] = dtype
            nodes_rec = ctx.record.setdefault("nodes", {})
            gone = {name: rec.get("ip") for name, rec in nodes_rec.items()
                    if rec.get("host") == h and name not in res.nodes}
            node_keys.forget(ctx, keys, gone)
            for name in gone:
                del nodes_rec[name]
            for name, rec in res.nodes.items():
                before = previous.get(name, {})
                rec["ready"] = before.get("ready", False)
                if rec["dhcp"] and before.get("mac") == rec["mac"]:
                    rec["ip"] = before.get("ip")  # the lease it was set up at (checked against the server)
                nodes_rec[name] = rec
            pending = [n for n in res.nodes if n in res.to_start or not nodes_rec[n]["ready"]]
            running = [n for n in res.nodes if n not in pending and nodes_rec[n]["dhcp"]]
            # Every generated key is pinned for its known address before any node starts (a DHCP
            # node's once its lease is known, in _boot).
            node_keys.pin(ctx, keys, {n: nodes_rec[n].get("ip") for n in pending})
            done = await asyncio.gather(
                *(self._boot(ctx, hc, nodes_rec[n], net, sem, n in res.to_start, keys, dtype) for n in pending),
                *(self._settle_lease(ctx, hc, nodes_rec[n], net, wait=None) for n in running))
            return res.changes + [c for extra in done for c in extra]

        return await self.hosts.each(ctx, hosts, one, record=not dry_run)

    @staticmethod
    def _waits(ctx: StageContext, hc: HostConnection) -> bool:
        """Whether guests are waited for (leases, SSH). The test driver runs no guest: not there,
        unless a test asks for it (option `libvirt_wait`) with doubles for leases and SSH."""
        return bool(ctx.options.get("libvirt_wait", not hc.is_test_driver))

    async def _boot(self, ctx: StageContext, hc: HostConnection, rec: dict[str, Any], net: NetSpec,
                    sem: asyncio.Semaphore, start: bool, keys: node_keys.NodeKeyStore,
                    domain_type: str) -> list[Change]:
        """Starts a node (bounded concurrency) and waits until SSH answers and cloud-init is done;
        a DHCP node's lease is waited for, checked and pinned first (`_settle_lease`).

        The node's generated host key was pinned for its address before it started (a DHCP node's
        is pinned here, once the lease is known and agrees with the record).
        """
        name = rec["name"]
        async with sem:
            if start:
                ctx.progress(name, "starting")
                await hc.call(lambda c: vms_layer.start(c, name))
            if not self._waits(ctx, hc):
                return []
            # One deadline for the whole boot (lease, SSH, cloud-init), not one per step.
            timeout = float(ctx.options.get("boot_timeout", 600))
            deadline = time.monotonic() + timeout

            async def ready() -> tuple[list[Change], str | None]:
                changes = []
                if rec.get("dhcp"):
                    changes = await self._settle_lease(ctx, hc, rec, net, wait=timeout)
                    node_keys.pin(ctx, keys, {name: rec.get("ip")})
                ctx.progress(name, f"waiting for SSH on {rec['ip']} and cloud-init")
                left = max(30.0, deadline - time.monotonic())
                return changes, await wait_ready(ctx, rec["ip"], timeout=left)

            try:
                if start and hc.guests_here:
                    watch = watch_console(hc, name, log=serial_log(name), silent_after=SILENT_CONSOLE_S.get(
                        domain_type, SILENT_CONSOLE_S["qemu"]), progress=lambda msg: ctx.progress(name, msg))
                    changes, update = await ready_watched(ready(), watch)
                else:
                    changes, update = await ready()
            except LeaseChanged:
                raise
            except (RemoteError, NotReady) as exc:
                why = await hc.call(lambda c: boot_diagnosis(c, name, local=hc.is_local))
                raise NotReady(f"{exc}\n  {why}") from exc
            rec["ready"] = True
            if update:
                rec["update_on_boot"] = update
            warning = update_warning(update)
            ctx.progress(name, f"ready; {warning}" if warning else "ready")
            return changes

    async def _settle_lease(self, ctx: StageContext, hc: HostConnection, rec: dict[str, Any], net: NetSpec,
                            wait: float | None) -> list[Change]:
        """A DHCP node's address: the lease (waited for up to `wait` seconds, else only looked up),
        refused when it moved away from the recorded one (`check_lease`), recorded right away, and
        kept stable by a DHCP reservation MAC -> IP in the cluster network.

        Why a reservation: libvirt's dnsmasq hands a returning MAC its old address only while it
        remembers the lease; the reservation makes the address part of the network's definition.
        """
        if not self._waits(ctx, hc):
            return []
        name, mac, host = rec["name"], rec["mac"], rec["host"]
        network = Names(ctx.cluster).network
        if net.mode == "bridge":  # preflight refuses this; no DHCP server of ours to ask
            raise NotReady(f"node {name} has no ip and network mode is bridge: its address cannot be known")
        if rec.get("ip") and not _is_ipv4(rec["ip"]):
            raise NotReady(f"node {name}: the vms record holds {rec['ip']!r} as its address, which is no IPv4 "
                           "address; remove the node's entry from the record and run the vms stage again")
        if wait is None:
            current = await hc.call(lambda c: ipv4_leases(c, network, mac))
        else:
            if not rec.get("ip"):
                ctx.progress(name, "waiting for a DHCP lease")
            current = await wait_leases(hc, network, mac, timeout=wait)
        recorded = rec.get("ip")
        if recorded and current and recorded not in current:
            await hc.call(lambda c: network_layer.pin(c, network, network_layer.Reservation(mac, name, recorded)))
            check_lease(name, mac, recorded, current, network=network, host=host)
        ip = recorded or (current[0] if current else None)
        if ip is None:
            return []
        if not recorded:
            rec["ip"] = ip
            ctx.checkpoint()  # recorded before anything else can fail
            ctx.progress(name, f"leased {ip}")
        if await hc.call(lambda c: network_layer.pin(c, network, network_layer.Reservation(mac, name, ip))):
            return [Change("change", "network", network, host, f"reserved {ip} for {name} (its DHCP lease)")]
        return []
