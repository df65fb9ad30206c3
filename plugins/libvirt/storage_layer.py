"""The storage layer on one host: the cluster's pools, its base image and every node's disks.

- `<cluster>-main-resource-pool` (dir) at `<mainResourcePoolPath>/<cluster>-main-resource-pool`,
  and `<cluster>-<pool>-data-resource-pool` for each configured data pool;
- the base image volume `<cluster>-base-volume` in the main pool, streamed from the local image
  file (plus `<cluster>-base-kernel` / `-initrd` when the image ships them for direct boot);
- per node a qcow2 overlay `<vm>-main-disk` of mainDiskSize GiB backed by the base, and raw
  `<vm>-<disk>-data-disk` volumes in their pools (left blank, as in the original).

Volumes of nodes that left the topology are deleted here only when their domain is already gone;
otherwise the vms layer removes them together with the domain.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubitect_core.sdk import Change, Node, lazy_import

from . import images
from .connection import ignore_missing, is_missing, lookup
from .ownership import cluster_domains, cluster_pools, cluster_volumes
from .render import render
from .spec import HostSpec, Names, pool_dir

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

GIB = 1 << 30


@dataclass(frozen=True)
class BaseImage:
    """What the storage layer needs to know of the base image (None fields: not known in a plan)."""

    format: str
    virtual_size: int
    local: images.LocalImage | None  # None in a plan of a URL not yet downloaded

    @property
    def has_kernel(self) -> bool:
        return bool(self.local and self.local.kernel)


def desired_pools(cluster: str, host: HostSpec) -> dict[str, str]:
    """Pool name -> directory for one host: the main pool and every configured data pool."""
    names = Names(cluster)
    pools = {names.main_pool: pool_dir(host.main_pool_path, names.main_pool)}
    for pool, parent in sorted(host.data_pools.items()):
        pools[names.data_pool(pool)] = pool_dir(parent, names.data_pool(pool))
    return pools


def pool_path(conn: libvirt.virConnect, name: str, fallback: str) -> str:
    """A pool's directory as libvirt knows it (the configured one if the pool does not exist)."""
    pool = lookup(conn.storagePoolLookupByName, name)
    if pool is None:
        return fallback
    return ET.fromstring(pool.XMLDesc(0)).findtext("./target/path") or fallback


def volume_xml(name: str, capacity: int, fmt: str, backing: tuple[str, str] | None = None) -> str:
    return render("volume.xml.j2", name=name, capacity=capacity, format=fmt,
                  backing_path=backing[0] if backing else None,
                  backing_format=backing[1] if backing else None)


def _ensure_pool(conn, name: str, path: str, host: str, dry_run: bool, changes: list[Change]):
    pool = lookup(conn.storagePoolLookupByName, name)
    if pool is None:
        changes.append(Change("create", "pool", name, host, path))
        if dry_run:
            return None
        pool = conn.storagePoolDefineXML(render("pool.xml.j2", name=name, path=path), 0)
        pool.build(0)  # mkdir (no-op when the directory exists)
        pool.create(0)
        pool.setAutostart(1)
        return pool
    if not pool.isActive():
        changes.append(Change("change", "pool", name, host, "started"))
        if not dry_run:
            pool.create(0)
            pool.setAutostart(1)
    else:
        changes.append(Change("keep", "pool", name, host))
    return pool


def _ensure_volume(pool, pool_name: str, name: str, xml_fn: Callable[[], str], capacity: int, host: str,
                   dry_run: bool, changes: list[Change], after_create: Callable | None = None,
                   sized: bool = True, what: str = ""):
    """Creates a missing volume; grows an existing one to `capacity` when `sized` (node disks;
    never shrinks). Base image volumes are not `sized`: an existing base is kept as it is,
    since overlays depend on it."""
    vol = lookup(pool.storageVolLookupByName, name) if pool is not None else None
    if vol is None:
        changes.append(Change("create", "volume", name, host, f"{pool_name}, {capacity // GIB or capacity} "
                              + ("GiB" if capacity >= GIB else "bytes") + (f"; {what}" if what else "")))
        if dry_run:
            return None
        vol = pool.createXML(xml_fn(), 0)
        if after_create:
            after_create(vol)
        return vol
    have = vol.info()[1]
    if not sized:
        changes.append(Change("keep", "volume", name, host))
    elif capacity and have < capacity:
        changes.append(Change("change", "volume", name, host, f"grown to {capacity // GIB} GiB"))
        if not dry_run:
            vol.resize(capacity, 0)
    elif capacity and have > capacity and capacity >= GIB:
        raise RuntimeError(f"host {host}: volume {name} is {have // GIB} GiB, the config asks for "
                           f"{capacity // GIB} GiB; disks cannot shrink")
    else:
        changes.append(Change("keep", "volume", name, host))
    return vol


def converge(conn: libvirt.virConnect, *, cluster: str, host: HostSpec, nodes: list[Node],
             base: BaseImage | None, dry_run: bool, say: Callable[[str], None],
             base_name: str | None = None) -> tuple[list[Change], dict]:
    """Plans or applies pools, base image and node disks on one host; returns changes and record.

    `base_name`: the base image volume's name when it is not kubitect's (`base_volume` on a host
    adopted from Kubitect (Go)): kept, and new nodes' disks are backed by it."""
    names = Names(cluster)
    base_volume = base_name or names.base_volume
    changes: list[Change] = []
    record: dict = {"pools": {}, "volumes": {}, "base_uploaded": None}
    want_pools = desired_pools(cluster, host)
    pools = {}
    for pname, path in want_pools.items():
        pools[pname] = _ensure_pool(conn, pname, path, host.name, dry_run, changes)
        record["pools"][pname] = pool_path(conn, pname, path)
    main = pools[names.main_pool]
    main_dir = record["pools"][names.main_pool]
    want_vols: set[tuple[str, str]] = set()

    if nodes and base is not None:
        base_path = str(Path(main_dir) / base_volume)

        def upload_base(vol):
            ok = images.upload(conn, vol, base.local.path, say) if base.local else False
            # libvirt's test driver cannot upload (VIR_ERR_NO_SUPPORT): the base stays the empty
            # volume just created, and the record says so.
            record["base_uploaded"] = ok

        want_vols.add((names.main_pool, base_volume))
        _ensure_volume(main, names.main_pool, base_volume,
                       lambda: volume_xml(base_volume, base.virtual_size, base.format),
                       base.virtual_size, host.name, dry_run, changes, upload_base, sized=False,
                       what=f"base image {base.local.description}" if base.local else "")
        if base.has_kernel:
            for vname, path in ((names.base_kernel, base.local.kernel), (names.base_initrd, base.local.initrd)):
                size = path.stat().st_size
                want_vols.add((names.main_pool, vname))
                _ensure_volume(main, names.main_pool, vname, lambda v=vname, s=size: volume_xml(v, s, "raw"),
                               size, host.name, dry_run, changes,
                               lambda vol, p=path: images.upload(conn, vol, p, say), sized=False)
        for node in nodes:
            disk = names.main_disk(node.name)
            want_vols.add((names.main_pool, disk))
            cap = node.main_disk_gib * GIB
            _ensure_volume(main, names.main_pool, disk,
                           lambda d=disk, c=cap: volume_xml(d, c, "qcow2", (base_path, base.format)),
                           cap, host.name, dry_run, changes)
            for dd in node.data_disks:
                pname = names.pool_for(dd.pool)
                if pname not in pools:
                    raise RuntimeError(f"host {host.name}: node {node.name} disk {dd.name} names pool "
                                       f"'{dd.pool}', which this host does not have")
                vname = names.data_disk(node.name, dd.name)
                want_vols.add((pname, vname))
                cap = dd.size_gib * GIB
                _ensure_volume(pools[pname], pname, vname, lambda v=vname, c=cap: volume_xml(v, c, "raw"),
                               cap, host.name, dry_run, changes)
    for pname, vname in sorted(want_vols):
        record["volumes"][vname] = str(Path(record["pools"][pname]) / vname)

    # Stale: volumes of nodes no longer wanted whose domain is gone (the vms layer removes the
    # others with their domain), and pools no longer configured.
    domains = set(cluster_domains(conn, cluster))
    existing_pools = cluster_pools(conn, cluster, set(want_pools))
    for pname, pool in sorted(existing_pools.items()):
        for vname, vol in sorted(cluster_volumes(pool, cluster).items()):
            if (pname, vname) in want_vols or vname.endswith("-cloudinit.iso"):
                continue
            if vname in (names.base_volume, names.base_kernel, names.base_initrd) and pname in want_pools:
                if nodes or domains:
                    continue
            if any(vname.startswith(d + "-") for d in domains):
                continue
            changes.append(Change("delete", "volume", vname, host.name))
            if not dry_run:
                vol.delete(0)
        if pname not in want_pools:
            changes.append(Change("delete", "pool", pname, host.name))
            if not dry_run:
                remove_pool(pool)
    return changes, record


def remove_pool(pool: libvirt.virStoragePool) -> None:
    """Stops a pool, deletes its directory when empty, and undefines it. A pool that disappears
    part way (its handle then answers "no storage pool with matching uuid") is removed already."""
    try:
        active = pool.isActive()
    except libvirt.libvirtError as exc:
        if is_missing(exc):
            return
        raise
    if active:
        ignore_missing(pool.destroy)
    try:
        pool.delete(0)
    except libvirt.libvirtError:
        pass  # directory not empty (someone else's files) or already gone: keep the files
    ignore_missing(pool.undefine)


def destroy(conn: libvirt.virConnect, *, cluster: str, host: str, recorded_pools: list[str],
            adopted_volumes: tuple[str, ...] = ()) -> list[Change]:
    """Removes every volume the cluster made in its pools, then the pools themselves.

    `adopted_volumes`: recorded names of volumes kubitect took over whose names do not start with
    the cluster's (Kubitect's `base_volume`), removed from the cluster's own pools too."""
    changes = []
    for pname, pool in sorted(cluster_pools(conn, cluster, set(recorded_pools)).items()):
        found = cluster_volumes(pool, cluster)
        for extra in adopted_volumes if pool.isActive() else ():
            vol = lookup(pool.storageVolLookupByName, extra)
            if vol is not None:
                found[extra] = vol
        for vname, vol in sorted(found.items()):
            ignore_missing(lambda v=vol: v.delete(0))
            changes.append(Change("delete", "volume", vname, host))
        remove_pool(pool)
        changes.append(Change("delete", "pool", pname, host))
    return changes
