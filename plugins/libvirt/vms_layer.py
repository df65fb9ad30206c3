"""The vms layer on one host: each node's cloud-init seed volume and its domain.

The seed ISO is an IDE cdrom: Debian's cloud kernel has ata_piix but no AHCI driver, so a SATA
cdrom stays invisible to it (measured: cloud-init then falls back to DHCP and no user-data).

Converging defines what is missing or changed and returns the names to start; the provider
starts them with a bound on how many boot at once and waits for SSH and cloud-init. Domains of
the cluster that left the topology are removed together with their volumes.
"""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from kubitect_core.sdk import Change, Node, check_serials_distinct, lazy_import

from . import images
from .cloudinit import SeedFiles, build_iso, render_seed
from .connection import lookup
from .node_keys import NodeHostKey, NodeKeyStore
from .ownership import (
    Tags,
    add_recorded,
    cluster_domains,
    cluster_pools,
    cluster_volumes,
    domain_tags,
)
from .render import render, spec_hash
from .spec import METADATA_NS, METADATA_PREFIX, Names, NetSpec, instance_id, serial_log
from .storage_layer import volume_xml

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

TB_CACHE_MIB = 256
DEFAULT_CMDLINE = "root=LABEL=rootfs rw console=ttyS0"


@dataclass(frozen=True)
class NodeTemplate:
    """The node-template settings every VM of the cluster shares."""

    user: str
    public_key: str
    update_on_boot: bool
    cpu_mode: str  # custom | host-model | host-passthrough | maximum
    kernel_boot: bool = False  # the base image ships vmlinuz + initrd.img (direct kernel boot)
    cmdline: str = DEFAULT_CMDLINE


@dataclass
class VmResult:
    changes: list[Change] = field(default_factory=list)
    to_start: list[str] = field(default_factory=list)
    nodes: dict[str, dict] = field(default_factory=dict)


def libvirt_cpu_mode(cpu_mode: str, domain_type: str) -> str | None:
    """The `<cpu mode>` for a config cpuMode. `custom` leaves libvirt's default CPU model (as the
    original did); under QEMU emulation there is no host CPU to pass through, so host-model and
    host-passthrough become `maximum` (every feature TCG can emulate)."""
    if cpu_mode in ("", "custom", None):
        return None
    if domain_type == "qemu" and cpu_mode in ("host-model", "host-passthrough"):
        return "maximum"
    return cpu_mode


def node_seed(cluster: str, node: Node, net: NetSpec, tpl: NodeTemplate, mac: str | None = None,
              host_key: NodeHostKey | None = None) -> SeedFiles:
    """The cloud-init files of one node: static address in route/bridge modes, DHCP in nat;
    with `host_key`, the node's SSH host key (see node_keys)."""
    return render_seed(mac=mac, host_key=host_key, hostname=node.name, user=tpl.user, public_key=tpl.public_key,
                       update_on_boot=tpl.update_on_boot, instance_id=instance_id(cluster, node.name),
                       nic=net.nic, static=net.mode != "nat", ip=node.ip, prefix=net.prefix,
                       gateway=net.gateway, nameservers=net.nameservers)


def _disk_values(cluster: str, node: Node, disks: list[tuple[str, str]]) -> list[dict]:
    """Template values of a node's disks: the main disk, then data disks with their serials.

    A data disk carries `serial` (see `data_disk_serial`), the main disk none; the key is left
    out rather than set to None so the spec digest of a node without data disks is unchanged.
    """
    serials = check_serials_distinct(cluster, node.name, [d.name for d in node.data_disks])
    out = []
    for i, (path, fmt) in enumerate(disks):
        entry = {"path": path, "format": fmt, "dev": "vd" + string.ascii_lowercase[i]}
        if 0 < i <= len(node.data_disks):
            entry["serial"] = serials[node.data_disks[i - 1].name]
        out.append(entry)
    return out


def definition_change(old_xml: str, new_xml: str) -> str:
    """What a redefinition changes, for the plan: says so when data disks gain their serials.

    Why: clusters made before disks carried serials see every node with data disks "changed";
    the user should read that this is the serial (effective at the next boot, disks untouched).
    """
    def serials(xml: str) -> int:
        return len(ET.fromstring(xml).findall("./devices/disk/serial"))
    try:
        gained = serials(new_xml) - serials(old_xml)
    except ET.ParseError:
        gained = 0
    return (f"definition updated: {gained} data disk(s) get a stable serial (/dev/disk/by-id); "
            "disks and their data are kept") if gained > 0 else "definition updated"


def with_uuid(xml: str, uuid: str) -> str:
    """The XML with the existing domain's UUID: libvirt refuses to redefine a name under a new one
    ("already exists with uuid"), and our XML names none (libvirt picks it at the first define)."""
    return xml.replace("</name>\n", f"</name>\n  <uuid>{uuid}</uuid>\n", 1)


def domain_xml(*, cluster: str, node: Node, mac: str, net: NetSpec, tpl: NodeTemplate, domain_type: str,
               disks: list[tuple[str, str]], seed_path: str, seed_digest: str,
               kernel: str | None, initrd: str | None) -> tuple[str, str]:
    """(XML, spec digest) of a node's domain. `disks` is [(path, format)], main disk first."""
    values = {
        "domain_type": domain_type, "name": node.name, "cluster": cluster, "node_id": node.id,
        "role": node.role, "memory_mib": node.ram_gib * 1024, "vcpu": node.cpu,
        "cpu_mode": libvirt_cpu_mode(tpl.cpu_mode, domain_type), "tb_cache_mib": TB_CACHE_MIB,
        "kernel": kernel, "initrd": initrd, "cmdline": tpl.cmdline if kernel else None,
        "disks": _disk_values(cluster, node, disks),
        "seed_path": seed_path, "seed": seed_digest, "mac": mac,
        "network": f"{cluster}-network" if net.mode != "bridge" else None,
        "bridge": net.bridge if net.mode == "bridge" else None,
    }
    digest = spec_hash(values)
    xml = render("domain.xml.j2", ns=METADATA_NS, ns_prefix=METADATA_PREFIX, spec=digest,
                 serial_log=serial_log(node.name), **values)
    return xml, digest


def _host_key(store: NodeKeyStore | None, node: str, create: bool) -> NodeHostKey | None:
    if store is None:
        return None
    return store.ensure(node) if create else store.load(node)


def _put_seed(conn, pool, name: str, data: bytes) -> bool:
    old = lookup(pool.storageVolLookupByName, name)
    if old is not None:
        old.delete(0)
    vol = pool.createXML(volume_xml(name, len(data), "raw"), 0)
    # The test driver cannot upload (VIR_ERR_NO_SUPPORT): the seed volume then stays empty.
    return images.upload_bytes(conn, vol, data)


def remove_domain(dom: libvirt.virDomain) -> None:
    """Stops (hard) and undefines a domain, with its managed save and snapshot metadata."""
    if dom.isActive():
        dom.destroy()
    try:
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        dom.undefine()


def _volumes_by_node(conn, cluster: str, vms: list[str],
                     tags: Tags | None = None) -> dict[str, list[tuple[str, libvirt.virStorageVol]]]:
    """Each of `vms`' volumes (name `<vm>-...`) in the cluster's pools, sorted by name.

    Why one pass: listing pools and volumes reads every domain and volume on the host; done per
    removed node, scaling down 1,000 of 2,000 nodes took minutes."""
    out: dict[str, list[tuple[str, libvirt.virStorageVol]]] = {vm: [] for vm in vms}
    if not vms:
        return out
    for pool in cluster_pools(conn, cluster, tags=tags).values():
        for vname, vol in cluster_volumes(pool, cluster).items():
            # The owner is the longest of `vms` the volume's name starts with, followed by "-"
            # (worker-1's volumes are not worker-10's); found by looking up each such prefix.
            cut = vname.rfind("-")
            while cut > 0 and vname[:cut] not in out:
                cut = vname.rfind("-", 0, cut)
            if cut > 0:
                out[vname[:cut]].append((vname, vol))
    return {vm: sorted(vols, key=lambda x: x[0]) for vm, vols in out.items()}


@dataclass(frozen=True)
class NodeDefinition:
    """What a node's domain is defined from: its seed volume, disks, XML and spec digest."""

    seed: SeedFiles | None  # None for an adopted node: its seed volume is kept as it is
    seed_name: str
    seed_path: str
    disks: list[tuple[str, str]]  # (path, format), main disk first
    xml: str
    digest: str


def node_definition(*, cluster: str, node: Node, mac: str, net: NetSpec, tpl: NodeTemplate, domain_type: str,
                    pool_dirs: dict[str, str], adopted_seed: str | None = None,
                    host_key: NodeHostKey | None = None) -> NodeDefinition:
    """The domain a node should have. One place for converge and adoption, so a domain adopted
    with this digest reads as unchanged until the config changes it.

    `adopted_seed`: the node was adopted from Kubitect (Go) and keeps its cloud-init volume under
    that name, never rewritten (a new seed would carry a new instance-id, and cloud-init would run
    again on the next boot: new host keys, a package upgrade); it boots from its disk, never the
    kernel of a base image kubitect did not make.
    """
    names = Names(cluster)
    main_dir = pool_dirs[names.main_pool]
    disks = [(str(Path(pool_dirs[p]) / v), "qcow2" if i == 0 else "raw")
             for i, (p, v) in enumerate(names.node_volumes(node))]
    if adopted_seed:
        seed, seed_name, kernel, initrd = None, adopted_seed, None, None
        seed_digest = f"adopted:{adopted_seed}"
    else:
        seed = node_seed(cluster, node, net, tpl, mac, host_key)
        seed_name, seed_digest = names.seed(node.name), seed.digest
        kernel = str(Path(main_dir) / names.base_kernel) if tpl.kernel_boot else None
        initrd = str(Path(main_dir) / names.base_initrd) if tpl.kernel_boot else None
    seed_path = str(Path(main_dir) / seed_name)
    xml, digest = domain_xml(cluster=cluster, node=node, mac=mac, net=net, tpl=tpl, domain_type=domain_type,
                             disks=disks, seed_path=seed_path, seed_digest=seed_digest, kernel=kernel,
                             initrd=initrd)
    return NodeDefinition(seed, seed_name, seed_path, disks, xml, digest)


def converge(conn: libvirt.virConnect, *, cluster: str, host: str, net: NetSpec, tpl: NodeTemplate,
             nodes: list[tuple[Node, str]], domain_type: str, pool_dirs: dict[str, str],
             dry_run: bool, host_keys: NodeKeyStore | None = None,
             adopted_seeds: dict[str, str] | None = None) -> VmResult:
    """Plans or applies seeds and domains on one host; `pool_dirs` maps pool names to directories.

    With `host_keys`, a node created here gets a generated SSH host key in its seed; an existing
    node keeps the key it was given (none, for a node made before kubitect generated keys).
    `adopted_seeds` names the kept cloud-init volume of each node adopted from Kubitect (Go).
    """
    names = Names(cluster)
    out = VmResult()
    main_pool = lookup(conn.storagePoolLookupByName, names.main_pool)
    if main_pool is None and not dry_run:
        raise RuntimeError(f"host {host}: pool {names.main_pool} is missing; run the storage stage first")
    wanted = set()
    tags = domain_tags(conn)  # read once: every domain's XML, the costly part on a large host
    for node, mac in nodes:
        wanted.add(node.name)
        dom, tag = tags.get(node.name, (None, None))
        if dom is None:
            dom = lookup(conn.lookupByName, node.name)  # an untagged domain of that name, if any
        # an adopted node whose domain was removed meanwhile is made afresh, as kubitect makes one
        adopted = (adopted_seeds or {}).get(node.name) if dom is not None else None
        d = node_definition(cluster=cluster, node=node, mac=mac, net=net, tpl=tpl, domain_type=domain_type,
                            pool_dirs=pool_dirs, adopted_seed=adopted,
                            host_key=None if adopted else _host_key(host_keys, node.name,
                                                                    dom is None and not dry_run))
        seed, seed_name, seed_path, disks, xml, digest = d.seed, d.seed_name, d.seed_path, d.disks, d.xml, d.digest
        # name, host, ip, mac, domain: what every provider records (contracts.VmProvider); a DHCP
        # node's ip is filled in by the provider from the lease.
        out.nodes[node.name] = {"name": node.name, "host": host, "role": node.role, "id": node.id,
                                "ip": node.ip, "mac": mac, "domain": node.name, "dhcp": bool(node.dhcp),
                                "domain_type": domain_type, "volumes": [p for p, _f in disks] + [seed_path]}
        if dom is None:
            out.changes.append(Change("create", "volume", seed_name, host, "cloud-init seed"))
            out.changes.append(Change("create", "domain", node.name, host,
                                      f"{domain_type}, {node.cpu} vCPU, {node.ram_gib} GiB, {node.address}"))
            if not dry_run:
                _put_seed(conn, main_pool, seed_name, build_iso(seed))
                dom = conn.defineXML(xml)
                dom.setAutostart(1)
            out.to_start.append(node.name)
            continue
        if tag is None or tag.get("name") != cluster:
            raise RuntimeError(f"host {host}: a domain named {node.name} exists but was not made for "
                               f"cluster {cluster}; remove or rename it")
        seed_vol = lookup(main_pool.storageVolLookupByName, seed_name) if main_pool else None
        if tag.get("spec") != digest or seed_vol is None:
            what = definition_change(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), xml)
            out.changes.append(Change("change", "domain", node.name, host,
                                      f"{what}; takes effect at the next boot" if dom.isActive() else what))
            if not dry_run:
                if seed is not None:
                    _put_seed(conn, main_pool, seed_name, build_iso(seed))
                conn.defineXML(with_uuid(xml, dom.UUIDString()))
                dom.setAutostart(1)
        else:
            out.changes.append(Change("keep", "domain", node.name, host))
        if not dom.isActive():
            out.changes.append(Change("change", "domain", node.name, host, "started"))
            out.to_start.append(node.name)
    unwanted = {name: dom for name, (dom, tag) in tags.items() if tag.get("name") == cluster and name not in wanted}
    volumes = _volumes_by_node(conn, cluster, list(unwanted), tags)
    for name, dom in sorted(unwanted.items()):
        out.changes.append(Change("delete", "domain", name, host))
        out.changes += [Change("delete", "volume", v, host) for v, _ in volumes[name]]
        if not dry_run:
            remove_domain(dom)
            for _v, vol in volumes[name]:
                vol.delete(0)
    return out


def destroy(conn: libvirt.virConnect, *, cluster: str, host: str, recorded: list[str]) -> list[Change]:
    """Removes the cluster's domains (by tag, plus recorded names still tagged for it or untagged)
    and their cloud-init seed volumes; disks are left to the storage layer's destroy."""
    changes = []
    found = add_recorded(cluster_domains(conn, cluster), recorded, conn.lookupByName, cluster)
    for name, dom in sorted(found.items()):
        remove_domain(dom)
        changes.append(Change("delete", "domain", name, host))
    for pool in cluster_pools(conn, cluster).values():
        for vname, vol in sorted(cluster_volumes(pool, cluster).items()):
            if vname.endswith("-cloudinit.iso"):
                vol.delete(0)
                changes.append(Change("delete", "volume", vname, host))
    return changes


def existing_domain_type(conn: libvirt.virConnect, cluster: str) -> str | None:
    """The domain type the cluster's domains on this host already use, if any."""
    for dom in cluster_domains(conn, cluster).values():
        return ET.fromstring(dom.XMLDesc(0)).get("type")
    return None


def start(conn: libvirt.virConnect, name: str) -> None:
    """Starts a defined domain unless it already runs."""
    dom = conn.lookupByName(name)
    if not dom.isActive():
        dom.create()
