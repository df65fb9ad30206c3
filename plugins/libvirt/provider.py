"""The libvirt VM provider: network, storage and vms layers on local and remote libvirt hosts.

Each host is driven through its own `HostConnection` (one connection, one worker thread); the
hosts of one call are converged concurrently. Plan and apply share one code path per layer
(`dry_run`), so a plan lists exactly what apply would do.

Record layout (the stage's `ctx.record` slice):
- network: `hosts[h] = {uri}`, `networks[h] = {name, mode, bridge}`
- storage: `hosts[h] = {uri}`, `pools[h] = {pool: dir}`, `volumes[h] = {volume: path}`,
  `base_uploaded[h]` (False on a driver without upload, e.g. the test driver)
- vms: `hosts[h] = {uri, domain_type}`, `nodes[name] = {name, host, role, id, ip, mac,
  domain_type, volumes, ready}`
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import libvirt

from kubitect_core.sdk import Change, Node, StageContext
from kubitect_core.sdk.images import vm_image_for_source

from . import host_ssh, hosttype, images, network_layer, node_keys, storage_layer, vms_layer
from .connection import ConnectionCache, HostConnection, lookup
from .host_ssh import HostSsh
from .readiness import NotReady, check_lease, ipv4_leases, wait_leases, wait_ready
from .spec import (
    HostSpec,
    Names,
    NetSpec,
    attr,
    host_specs,
    image_spec,
    net_spec,
    node_mac,
)

LAYERS = ("network", "storage", "vms")
DEFAULT_MAX_BOOTING = 3  # 2-core hosts: more VMs booting at once only slows all of them


def _host_line(host: str, exc: BaseException) -> str:
    """`host: cause`, once: causes that already name the host ("host h1: ...") are not prefixed again."""
    text = str(exc).strip() or type(exc).__name__
    for prefix in (f"host {host}: ", f"{host}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return f"{host}: {text}"


class LibvirtError(RuntimeError):
    """A libvirt layer failed on one or more hosts; the message names each host and cause."""


class LibvirtProvider:
    """The built-in `libvirt` VM provider (see `kubitect_core.sdk.VmProvider`)."""

    name = "libvirt"

    def __init__(self) -> None:
        self.connections = ConnectionCache()
        self._domain_types: dict[tuple[str, str], str] = {}  # (host, uri) -> "kvm" | "qemu"
        self._scratch: tempfile.TemporaryDirectory | None = None

    # -- connections -----------------------------------------------------------------------

    def _ssh_dir(self, ctx: StageContext) -> Path:
        """Where hosts' pinned keys and ssh wrappers live: the cluster's ssh dir. A plan of a
        cluster never applied creates no cluster directory: it uses a scratch one for the run."""
        if ctx.cluster_dir.is_dir():
            return ctx.cluster_dir / "ssh"
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="kubitect-plan-")
        return Path(self._scratch.name) / "ssh"

    def host_specs(self, ctx: StageContext, hosts: list[str]) -> dict[str, HostSpec]:
        """The hosts to work on; a host gone from the config is reached through its recorded
        access (or URI), so scaling a host away can still clean it up."""
        specs = host_specs(ctx.config, ctx.options.get("libvirt_uris"), self._ssh_dir(ctx))
        recorded = ctx.record.get("hosts", {})
        out = {}
        for h in hosts:
            if h in specs:
                out[h] = specs[h]
            elif h in recorded:
                ssh = HostSsh.from_record(recorded[h].get("ssh"))
                out[h] = HostSpec(name=h, uri=ssh.uri() if ssh else recorded[h]["uri"], remote=ssh is not None,
                                  main_pool_path="", ssh=ssh)
            else:
                raise LibvirtError(f"host '{h}' is neither configured nor recorded")
        return out

    def connection(self, host: str, uri: str | None = None) -> HostConnection:
        """The run's connection to `host` (tests inspect libvirt state through it)."""
        if uri is None:
            found = self.connections.find(host)
            if found is None:
                raise KeyError(f"no libvirt connection to host {host} has been opened")
            return found
        return self.connections.get(host, uri)

    def close(self) -> None:
        """Closes every connection (the end of a process run)."""
        self.connections.close_all()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    async def _each_host(self, ctx: StageContext, hosts: list[str],
                         fn: Callable[[HostSpec, HostConnection], Awaitable[list[Change]]],
                         record: bool = True) -> list[Change]:
        specs = self.host_specs(ctx, hosts)
        if record:  # remember how each host was reached, for cleaning up a host later removed
            ctx.record.setdefault("hosts", {})
            for h, spec in specs.items():
                ctx.record["hosts"].setdefault(h, {})["uri"] = spec.uri
                if spec.ssh is not None:
                    ctx.record["hosts"][h]["ssh"] = spec.ssh.as_record()
        results = await asyncio.gather(*(fn(spec, self.connections.get(h, spec.uri, spec.ssh))
                                         for h, spec in specs.items()), return_exceptions=True)
        changes: list[Change] = []
        errors = []
        for h, res in zip(specs, results, strict=True):
            if isinstance(res, BaseException):
                errors.append(_host_line(h, res))
            else:
                changes += res
        if errors:
            raise LibvirtError("\n".join(errors))
        return changes

    # -- contract --------------------------------------------------------------------------

    async def preflight(self, ctx: StageContext, hosts: list[str]) -> list[str]:
        """Checks every host answers, the bridge exists (bridge mode) and the image is there."""
        problems: list[str] = []
        net = net_spec(ctx.config)
        image = image_spec(ctx.config)
        if "://" not in image.source and not Path(image.source).is_file():
            problems.append(f"cluster.nodeTemplate.os.source: image file {image.source} does not exist")
        if net.mode == "bridge":
            problems += [f"node {n.name}: no ip, and in bridge mode the address a DHCP server outside "
                         "kubitect hands out cannot be learned; give it an ip (or use network mode nat)"
                         for h in hosts for n in self._nodes(ctx, h) if not n.ip]

        async def check(spec: HostSpec, hc: HostConnection) -> list[Change]:
            try:
                await hc.call(lambda c: c.getVersion())
            except (ConnectionError, libvirt.libvirtError) as exc:
                problems.append(str(exc))
                return []
            if net.mode == "bridge" and net.bridge:
                if not await hc.call(lambda c: _bridge_exists(c, net.bridge, spec.remote)):
                    problems.append(f"host {spec.name}: bridge '{net.bridge}' (cluster.network.bridge) does "
                                    "not exist there; create it first or use network mode nat/route")
            return []

        await self._each_host(ctx, hosts, check, record=False)
        return problems

    async def plan(self, layer: str, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """What apply would do on these hosts for `layer`; touches nothing."""
        return await self._run(layer, ctx, hosts, dry_run=True)

    async def apply(self, layer: str, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Converges `layer` on these hosts; a second call returns only "keep"."""
        return await self._run(layer, ctx, hosts, dry_run=False)

    async def destroy(self, layer: str, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Removes what `layer` made for the cluster, found by tag and name even without a record."""
        _check_layer(layer)
        cluster = ctx.cluster

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            h = spec.name
            if layer == "vms":
                recorded = [n for n, v in ctx.record.get("nodes", {}).items() if v.get("host") == h]
                out = await hc.call(lambda c: vms_layer.destroy(c, cluster=cluster, host=h, recorded=recorded))
                keys = node_keys.store_for(ctx)
                for n in {*recorded, *(c.name for c in out if c.kind == "domain")}:
                    node_keys.forget(ctx, keys, n, ctx.record.get("nodes", {}).get(n, {}).get("ip"))
                for n in recorded:
                    ctx.record["nodes"].pop(n, None)
                return out
            if layer == "storage":
                recorded = list(ctx.record.get("pools", {}).get(h, {}))
                out = await hc.call(lambda c: storage_layer.destroy(c, cluster=cluster, host=h,
                                                                    recorded_pools=recorded))
                for key in ("pools", "volumes", "base_uploaded"):
                    ctx.record.get(key, {}).pop(h, None)
                return out
            rec = ctx.record.get("networks", {}).get(h) or {}
            recorded = [rec["name"]] if rec.get("name") else []
            out = await hc.call(lambda c: network_layer.destroy(c, cluster=cluster, host=h, recorded=recorded))
            ctx.record.get("networks", {}).pop(h, None)
            if spec.ssh is not None:  # the host's last layer is gone: so is its pinned key
                host_ssh.forget(spec.ssh)
            return out

        async def forget(spec: HostSpec, hc: HostConnection) -> list[Change]:
            out = await one(spec, hc)
            ctx.record.get("hosts", {}).pop(spec.name, None)
            return out

        return await self._each_host(ctx, hosts, forget, record=False)

    # -- layers ----------------------------------------------------------------------------

    async def _run(self, layer: str, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        _check_layer(layer)
        if layer == "network":
            return await self._network(ctx, hosts, dry_run)
        if layer == "storage":
            return await self._storage(ctx, hosts, dry_run)
        return await self._vms(ctx, hosts, dry_run)

    @staticmethod
    def _nodes(ctx: StageContext, host: str) -> list[Node]:
        return [n for n in ctx.topology.nodes if n.host == host]

    async def _network(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        net = net_spec(ctx.config)
        topo = ctx.topology

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            nodes = [(n, node_mac(topo, n)) for n in self._nodes(ctx, spec.name)]
            changes, rec = await hc.call(lambda c: network_layer.converge(
                c, cluster=ctx.cluster, host=spec.name, net=net, nodes=nodes, dry_run=dry_run, vip=topo.vip))
            if not dry_run:
                ctx.record.setdefault("networks", {})[spec.name] = rec
            return changes

        return await self._each_host(ctx, hosts, one, record=not dry_run)

    async def _base_image(self, ctx: StageContext, dry_run: bool) -> storage_layer.BaseImage | None:
        """The base image: resolved (downloaded if a URL) for apply; for a plan only inspected
        when already local, never downloaded."""
        source = image_spec(ctx.config).source
        say = _threadsafe(ctx, "image")
        if dry_run:
            local = None
            if "://" not in source:
                local = images.local_image(Path(source)) if Path(source).is_file() else None
            else:
                cached = images.cache_dir(ctx.home) / os.path.basename(source)
                local = images.local_image(cached) if cached.is_file() else None
            if local is None:
                return storage_layer.BaseImage(format="qcow2", virtual_size=0, local=None)
            return storage_layer.BaseImage(local.format, local.virtual_size, local)
        loop = asyncio.get_running_loop()
        local = await loop.run_in_executor(None, lambda: images.resolve(source, ctx.home, say))
        return storage_layer.BaseImage(local.format, local.virtual_size, local)

    async def _storage(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        specs = self.host_specs(ctx, hosts)
        needs_image = any(self._nodes(ctx, h) for h in specs)
        base = await self._base_image(ctx, dry_run) if needs_image else None

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            nodes = self._nodes(ctx, spec.name)
            say = _threadsafe(ctx, spec.name)
            changes, rec = await hc.call(lambda c: storage_layer.converge(
                c, cluster=ctx.cluster, host=spec, nodes=nodes, base=base, dry_run=dry_run, say=say))
            if not dry_run:
                ctx.record.setdefault("pools", {})[spec.name] = rec["pools"]
                ctx.record.setdefault("volumes", {})[spec.name] = rec["volumes"]
                if rec["base_uploaded"] is not None:
                    ctx.record.setdefault("base_uploaded", {})[spec.name] = rec["base_uploaded"]
            return changes

        return await self._each_host(ctx, hosts, one, record=not dry_run)

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
            started = time.monotonic()
            found = await hc.call(lambda c: hosttype.probe(c, kernel, allow_guest=not dry_run))
            if found is None:
                return "auto"
            self._domain_types[key] = found
            ctx.progress(host, f"domain type {found} (probed in {time.monotonic() - started:.1f} s)")
        return self._domain_types[key]

    def _template(self, ctx: StageContext) -> vms_layer.NodeTemplate:
        cfg = ctx.config
        source = image_spec(cfg).source
        kernel_boot, cmdline = False, vms_layer.DEFAULT_CMDLINE
        if "://" not in source and Path(source).is_file():
            kernel_boot = images.local_image(Path(source)).kernel is not None
            built = vm_image_for_source(source)  # kubitect's own image: its manifest names the cmdline
            if built is not None:
                cmdline = built.cmdline
        return vms_layer.NodeTemplate(
            cmdline=cmdline,
            user=ctx.ssh.user or attr(cfg, "cluster.node_template.user", "k8s"),
            public_key=ctx.ssh.public_key_text(),
            update_on_boot=bool(attr(cfg, "cluster.node_template.update_on_boot", True)),
            cpu_mode=str(attr(cfg, "cluster.node_template.cpu_mode", "custom")),
            kernel_boot=kernel_boot)

    async def _vms(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        net = net_spec(ctx.config)
        tpl = self._template(ctx)
        topo = ctx.topology
        names = Names(ctx.cluster)
        sem = asyncio.Semaphore(int(ctx.options.get("max_booting", DEFAULT_MAX_BOOTING)))
        previous = dict(ctx.record.get("nodes", {}))
        keys = node_keys.store_for(ctx)

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            h = spec.name
            nodes = [(n, node_mac(topo, n)) for n in self._nodes(ctx, h)]
            wanted_pools = storage_layer.desired_pools(ctx.cluster, spec)
            pool_dirs = await hc.call(lambda c: {p: storage_layer.pool_path(c, p, d)
                                                 for p, d in wanted_pools.items()})
            kernel = str(Path(pool_dirs[names.main_pool]) / names.base_kernel) if tpl.kernel_boot else None
            dtype = await self._domain_type(ctx, h, hc, kernel, dry_run)
            res = await hc.call(lambda c: vms_layer.converge(
                c, cluster=ctx.cluster, host=h, net=net, tpl=tpl, nodes=nodes, domain_type=dtype,
                pool_dirs=pool_dirs, dry_run=dry_run, host_keys=keys))
            if dry_run:
                return res.changes
            ctx.record["hosts"].setdefault(h, {})["domain_type"] = dtype
            nodes_rec = ctx.record.setdefault("nodes", {})
            for name in list(nodes_rec):
                if nodes_rec[name].get("host") == h and name not in res.nodes:
                    node_keys.forget(ctx, keys, name, nodes_rec[name].get("ip"))
                    del nodes_rec[name]
            for name, rec in res.nodes.items():
                before = previous.get(name, {})
                rec["ready"] = before.get("ready", False)
                if rec["dhcp"] and before.get("mac") == rec["mac"]:
                    rec["ip"] = before.get("ip")  # the lease it was set up at (checked against the server)
                nodes_rec[name] = rec
            pending = [n for n in res.nodes if n in res.to_start or not nodes_rec[n]["ready"]]
            running = [n for n in res.nodes if n not in pending and nodes_rec[n]["dhcp"]]
            done = await asyncio.gather(
                *(self._boot(ctx, hc, nodes_rec[n], net, sem, n in res.to_start, keys) for n in pending),
                *(self._settle_lease(ctx, hc, nodes_rec[n], net, wait=None) for n in running))
            return res.changes + [c for extra in done for c in extra]

        return await self._each_host(ctx, hosts, one, record=not dry_run)

    @staticmethod
    def _waits(ctx: StageContext, hc: HostConnection) -> bool:
        """Whether guests are waited for (leases, SSH). The test driver runs no guest: not there,
        unless a test asks for it (option `libvirt_wait`) with doubles for leases and SSH."""
        return bool(ctx.options.get("libvirt_wait", not hc.is_test_driver))

    async def _boot(self, ctx: StageContext, hc: HostConnection, rec: dict[str, Any], net: NetSpec,
                    sem: asyncio.Semaphore, start: bool, keys: node_keys.NodeKeyStore) -> list[Change]:
        """Starts a node (bounded concurrency) and waits until SSH answers and cloud-init is done;
        a DHCP node's lease is waited for, checked and pinned first (`_settle_lease`).

        The node's generated host key is pinned for its address before the first contact (for a
        DHCP node: once the lease is known and agrees with the record).
        """
        name = rec["name"]
        async with sem:
            if start:
                ctx.progress(name, "starting")
                await hc.call(lambda c: vms_layer.start(c, name))
            node_keys.pin(ctx, keys, name, rec.get("ip"))
            if not self._waits(ctx, hc):
                return []
            timeout = float(ctx.options.get("boot_timeout", 600))
            changes = await self._settle_lease(ctx, hc, rec, net, wait=timeout) if rec.get("dhcp") else []
            node_keys.pin(ctx, keys, name, rec.get("ip"))
            ctx.progress(name, f"waiting for SSH on {rec['ip']} and cloud-init")
            await wait_ready(ctx, rec["ip"], timeout=timeout)
            rec["ready"] = True
            ctx.progress(name, "ready")
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


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(str(text))
    except ValueError:
        return False
    return True


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise ValueError(f"unknown layer '{layer}' (expected one of {', '.join(LAYERS)})")


def _threadsafe(ctx: StageContext, subject: str) -> Callable[[str], None]:
    """A progress callback usable from a worker thread: it hops back onto the event loop."""
    loop = asyncio.get_running_loop()

    def say(message: str) -> None:
        loop.call_soon_threadsafe(ctx.progress, subject, message)

    return say


def _bridge_exists(conn: libvirt.virConnect, bridge: str, remote: bool) -> bool:
    """Whether the host has the bridge: libvirt's interface list, else (local host) sysfs."""
    try:
        if lookup(conn.interfaceLookupByName, bridge) is not None:
            return True
    except libvirt.libvirtError:
        pass
    if conn.getType().lower() != "test" and not remote and conn.getURI().startswith("qemu:///"):
        return Path(f"/sys/class/net/{bridge}/bridge").is_dir()
    return False
