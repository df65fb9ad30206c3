"""Machines kubitect took over from Kubitect (Go): how the layers read them, and the adoption itself.

Kubitect's Terraform (provider dmacvicar/libvirt 0.8.3) names almost everything as this provider
does: `<cluster>-network`, `<cluster>-main-resource-pool`, `<cluster>-<pool>-data-resource-pool`,
domains `<cluster>-<role>-<id>`, `<vm>-main-disk`, `<vm>-<disk>-data-disk`. Three things differ and
are KEPT as they are (renaming a volume or recreating a VM is not adoption):

- the base image volume is `base_volume` (ours: `<cluster>-base-volume`); new nodes' disks are
  backed by it;
- each node's cloud-init volume is `<vm>-cloud-init.iso` (ours: `<vm>-cloudinit.iso`); it is never
  rewritten (a new seed means a new instance-id, and cloud-init would run again);
- a node without a configured MAC has the one libvirt picked (ours derive it from the name).

These names go into every machine layer's record under `adopted` (`macs`, `seeds`, `base_volumes`),
and the layers read them from there. Domains and networks get the cluster's ownership tag (libvirt
`<metadata>`) with the spec digest this provider computes for the adopted config, so a plan of the
unchanged config shows no change; pools and volumes are owned by name, as always.

Nothing is touched until the Terraform state, the config and every host agree: each difference
(an object missing, another UUID, another MAC, vCPU or memory than the config says, another
cluster's tag) is listed in one refusal.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubitect_core.sdk import Change, Node, StageContext, StageError, Topology, lazy_import

from . import network_layer, storage_layer, vms_layer
from .connection import HostConnection, lookup
from .hosts import Hosts, nodes_on
from .ownership import metadata_of, network_tag, persistent_xml
from .spec import METADATA_NS, METADATA_PREFIX, HostSpec, Names, net_spec, node_mac

libvirt = lazy_import("libvirt")  # loaded on first use (fast start)

KEY = "adopted"
ORIGINAL = "Kubitect (Go)"
_HOST_MODULE = re.compile(r"module\.host_([A-Za-z0-9_-]+)")


# ------------------------------------------------------------------ what the layers read
def _adopted(ctx: StageContext) -> dict[str, Any]:
    value = ctx.record.get(KEY)
    return value if isinstance(value, dict) else {}


def mac_for(ctx: StageContext, topo: Topology, node: Node) -> str:
    """The node's MAC: the adopted VM's own, else the configured or derived one (`node_mac`)."""
    return _adopted(ctx).get("macs", {}).get(node.name) or node_mac(topo, node)


def adopted_seeds(ctx: StageContext) -> dict[str, str]:
    """node -> its kept cloud-init volume name, for nodes adopted from Kubitect (Go)."""
    return dict(_adopted(ctx).get("seeds", {}))


def adopted_networks(ctx: StageContext) -> dict[str, str]:
    """host -> the adopted cluster network there (owned by this recorded name, see network_tag)."""
    return dict(_adopted(ctx).get("networks", {}))


def adopted_base_volumes(ctx: StageContext) -> dict[str, str]:
    """host -> the kept base image volume name there."""
    return dict(_adopted(ctx).get("base_volumes", {}))


# ------------------------------------------------------------------ the Terraform state
@dataclass
class TfHost:
    """What Kubitect's Terraform state holds for one host module (`module.host_<name>`)."""

    pools: dict[str, dict] = field(default_factory=dict)  # name -> attributes
    networks: dict[str, dict] = field(default_factory=dict)
    volumes: dict[str, dict] = field(default_factory=dict)
    domains: dict[str, dict] = field(default_factory=dict)
    seeds: dict[str, str] = field(default_factory=dict)  # domain -> cloud-init volume name
    base_volume: str | None = None


def tf_hosts(tfstate: dict[str, Any]) -> dict[str, TfHost]:
    """The libvirt resources of Kubitect's state, per host module; a VM's domain and its cloud-init
    disk are paired by their module (`module.host_h.module.worker_module["1"]`)."""
    out: dict[str, TfHost] = {}
    seeds_by_module: dict[tuple[str, str], str] = {}
    domains_by_module: dict[tuple[str, str], str] = {}
    for res in tfstate.get("resources") or []:
        if not isinstance(res, dict) or res.get("mode", "managed") != "managed":
            continue
        module = str(res.get("module") or "")
        m = _HOST_MODULE.match(module)
        if m is None:
            continue
        host = out.setdefault(m.group(1), TfHost())
        for inst in res.get("instances") or []:
            attrs = (inst or {}).get("attributes") or {}
            name = attrs.get("name")
            if not isinstance(name, str):
                continue
            kind = res.get("type")
            if kind == "libvirt_pool":
                host.pools[name] = attrs
            elif kind == "libvirt_network":
                host.networks[name] = attrs
            elif kind == "libvirt_volume":
                host.volumes[name] = attrs
                if res.get("name") == "base_volume":
                    host.base_volume = name
            elif kind == "libvirt_domain":
                host.domains[name] = attrs
                domains_by_module[(m.group(1), module)] = name
            elif kind == "libvirt_cloudinit_disk":
                seeds_by_module[(m.group(1), module)] = name
    for key, seed in seeds_by_module.items():
        if key in domains_by_module:
            out[key[0]].seeds[domains_by_module[key]] = seed
    return out


def _tf_mac(attrs: dict) -> str | None:
    nics = attrs.get("network_interface") or []
    mac = nics[0].get("mac") if nics and isinstance(nics[0], dict) else None
    return mac.lower() if isinstance(mac, str) and mac else None


def _tf_address(attrs: dict) -> str | None:
    nics = attrs.get("network_interface") or []
    addresses = (nics[0].get("addresses") or []) if nics and isinstance(nics[0], dict) else []
    return next((a for a in addresses if isinstance(a, str) and "." in a), None)


# ------------------------------------------------------------------ one host
@dataclass
class HostAdoption:
    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    network: dict | None = None
    pools: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, dict] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, str] = field(default_factory=dict)
    base_volume: str | None = None
    domain_type: str | None = None
    tag_domains: list[tuple[libvirt.virDomain, str]] = field(default_factory=list)  # (domain, metadata XML)
    tag_network: tuple[libvirt.virNetwork, str] | None = None  # (network, persistent XML with the tag)
    reservations: list[network_layer.Reservation] = field(default_factory=list)


def _tag_xml(attrs: dict[str, str]) -> str:
    body = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return f"<{METADATA_PREFIX}:cluster xmlns:{METADATA_PREFIX}=\"{METADATA_NS}\" {body}/>"


def _with_network_tag(xml: str, tag: str) -> str:
    """The network's persistent XML with our tag added to its <metadata> (made when missing)."""
    if "<metadata>" in xml:
        return xml.replace("<metadata>", f"<metadata>\n    {tag}", 1)
    anchor = "</uuid>" if "</uuid>" in xml else "</name>"
    return xml.replace(anchor, f"{anchor}\n  <metadata>\n    {tag}\n  </metadata>", 1)


def _check_tag(problems: list[str], what: str, tag: dict[str, str] | None, cluster: str) -> None:
    if tag is not None and tag.get("name") != cluster:
        problems.append(f"{what} carries kubitect's tag of cluster '{tag.get('name')}'")


def inspect_host(conn: libvirt.virConnect, *, ctx: StageContext, spec: HostSpec, tf: TfHost | None,
                 tpl: vms_layer.NodeTemplate) -> HostAdoption:
    """Compares one host's Terraform state, config and libvirt objects; prepares the tags and records."""
    h, cluster = spec.name, ctx.cluster
    names = Names(cluster)
    res = HostAdoption()
    p = res.problems
    if tf is None:
        p.append(f"host {h}: in the config, but Kubitect's Terraform state has no module for it (module.host_{h})")
        return res
    net = net_spec(ctx.config)
    nodes = nodes_on(ctx, h)

    # pools: the config's, in the state, and on the host with the state's UUID
    for pname, fallback in storage_layer.desired_pools(cluster, spec).items():
        attrs = tf.pools.get(pname)
        pool = lookup(conn.storagePoolLookupByName, pname)
        if attrs is None:
            p.append(f"host {h}: pool {pname} is in the config but not in the Terraform state")
        elif pool is None:
            p.append(f"host {h}: pool {pname} is in the Terraform state but not on the host")
        elif attrs.get("id") and attrs["id"] != pool.UUIDString():
            p.append(f"host {h}: pool {pname} has UUID {pool.UUIDString()}, the Terraform state says {attrs['id']}")
        if pool is not None:
            res.pools[pname] = storage_layer.pool_path(conn, pname, fallback)
            res.changes.append(Change("keep", "pool", pname, h, f"adopted from {ORIGINAL}"))
    for pname in sorted(set(tf.pools) - set(storage_layer.desired_pools(cluster, spec))):
        p.append(f"host {h}: pool {pname} is in the Terraform state but not in the config")

    # the base image volume, kept under its name
    main_pool = lookup(conn.storagePoolLookupByName, names.main_pool)
    if nodes:
        if tf.base_volume is None:
            p.append(f"host {h}: the Terraform state has no base image volume (libvirt_volume.base_volume)")
        elif main_pool is not None and lookup(main_pool.storageVolLookupByName, tf.base_volume) is None:
            p.append(f"host {h}: base image volume {tf.base_volume} is in the Terraform state but not in "
                     f"pool {names.main_pool}")
        else:
            res.base_volume = tf.base_volume
            res.changes.append(Change("keep", "volume", tf.base_volume, h,
                                      f"base image, adopted from {ORIGINAL} under its own name"))

    # the network (nat/route): in the state, on the host with its UUID, of the configured shape
    if net.mode != "bridge":
        _inspect_network(conn, ctx, h, net, tf, res)
    elif tf.networks:
        p.append(f"host {h}: the config's network mode is bridge, but the Terraform state holds network(s) "
                 + ", ".join(sorted(tf.networks)))
    else:
        res.network = {"mode": "bridge", "bridge": net.bridge}

    # domains and their volumes
    wanted = {n.name for n in nodes}
    for extra in sorted(set(tf.domains) - wanted):
        p.append(f"host {h}: domain {extra} is in the Terraform state but the config has no such node on this host")
    pool_dirs = {pn: res.pools.get(pn, d) for pn, d in storage_layer.desired_pools(cluster, spec).items()}
    for node in nodes:
        _inspect_node(conn, ctx, h, node, net, tf, tpl, pool_dirs, res)
    _plan_reservations(conn, ctx, h, net, nodes, res)
    return res


def _inspect_network(conn, ctx, h, net, tf: TfHost, res: HostAdoption) -> None:
    p, name = res.problems, Names(ctx.cluster).network
    attrs = tf.networks.get(name)
    obj = lookup(conn.networkLookupByName, name)
    for extra in sorted(set(tf.networks) - {name}):
        p.append(f"host {h}: network {extra} is in the Terraform state but not in the config")
    if attrs is None:
        p.append(f"host {h}: network {name} is not in the Terraform state")
        return
    if obj is None:
        p.append(f"host {h}: network {name} is in the Terraform state but not on the host")
        return
    if attrs.get("id") and attrs["id"] != obj.UUIDString():
        p.append(f"host {h}: network {name} has UUID {obj.UUIDString()}, the Terraform state says {attrs['id']}")
    tag = network_tag(obj)
    _check_tag(p, f"host {h}: network {name}", tag, ctx.cluster)
    live = ET.fromstring(obj.XMLDesc(0))
    fwd = live.find("forward")
    mode = fwd.get("mode") if fwd is not None else None
    if mode != net.mode:
        p.append(f"host {h}: network {name} forwards in mode {mode}, the config says {net.mode}")
    ip = live.find("ip")
    have_net = None
    if ip is not None and ip.get("address"):
        prefix = ip.get("prefix") or (ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
                                      if ip.get("netmask") else None)
        have_net = ipaddress.IPv4Interface(f"{ip.get('address')}/{prefix}")
    if have_net is None or have_net.network != net.cidr or str(have_net.ip) != net.gateway:
        p.append(f"host {h}: network {name} is {have_net or 'without an address'}, the config asks gateway "
                 f"{net.gateway} in {net.cidr}")
    bridge = live.find("bridge")
    res.network = {"name": name, "mode": net.mode, "bridge": bridge.get("name") if bridge is not None else None}
    if tag is None or tag.get("name") != ctx.cluster or not tag.get("spec"):
        _xml, digest = network_layer.network_xml(ctx.cluster, net, [])
        marked = _tag_xml({"name": ctx.cluster, "spec": digest, "adopted": ORIGINAL})
        res.tag_network = (obj, _with_network_tag(persistent_xml(obj), marked))
        res.changes.append(Change("change", "network", name, h, f"tagged for cluster {ctx.cluster} (adopted from "
                                                                f"{ORIGINAL}; kept running, not recreated)"))
    else:
        res.changes.append(Change("keep", "network", name, h, "adopted already"))


def _domain_facts(dom: libvirt.virDomain) -> tuple[str, int, int, list[str]]:
    """(type, vCPUs, memory MiB, MACs) of a domain's persistent definition."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    mem = root.find("memory")
    unit = (mem.get("unit") or "KiB") if mem is not None else "KiB"
    factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024, "b": 1 / (1 << 20),
              "bytes": 1 / (1 << 20)}.get(unit, 1 / 1024)
    mib = int(int(mem.text or 0) * factor) if mem is not None else 0
    vcpu = int((root.findtext("vcpu") or "0").strip() or 0)
    macs = [m.get("address", "").lower() for m in root.findall("./devices/interface/mac")]
    return root.get("type") or "kvm", vcpu, mib, macs


def _inspect_node(conn, ctx, h, node: Node, net, tf: TfHost, tpl, pool_dirs, res: HostAdoption) -> None:
    p, cluster, names = res.problems, ctx.cluster, Names(ctx.cluster)
    attrs = tf.domains.get(node.name)
    if attrs is None:
        p.append(f"host {h}: node {node.name} is in the config but has no domain in the Terraform state")
        return
    dom = lookup(conn.lookupByName, node.name)
    if dom is None:
        p.append(f"host {h}: domain {node.name} is in the Terraform state but not on the host")
        return
    if attrs.get("id") and attrs["id"] != dom.UUIDString():
        p.append(f"host {h}: domain {node.name} has UUID {dom.UUIDString()}, the Terraform state says {attrs['id']}")
    tag = metadata_of(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    _check_tag(p, f"host {h}: domain {node.name}", tag, cluster)
    dtype, vcpu, mib, macs = _domain_facts(dom)
    if vcpu != node.cpu or mib != node.ram_gib * 1024:
        p.append(f"host {h}: domain {node.name} has {vcpu} vCPU and {mib} MiB, the config says {node.cpu} vCPU "
                 f"and {node.ram_gib * 1024} MiB")
    mac = _tf_mac(attrs)
    if not macs or (mac and macs[0] != mac):
        p.append(f"host {h}: domain {node.name} has MAC {macs[0] if macs else 'none'}, the Terraform state says {mac}")
        return
    if node.mac and node.mac.lower() != macs[0]:
        p.append(f"host {h}: domain {node.name} has MAC {macs[0]}, the config says {node.mac.lower()}")
    mac = macs[0]
    res.domain_type = res.domain_type or dtype
    for pool_name, vol in names.node_volumes(node):
        if vol not in tf.volumes:
            p.append(f"host {h}: volume {vol} of node {node.name} is in the config but not in the Terraform state")
            continue
        pool = lookup(conn.storagePoolLookupByName, pool_name)
        if pool is None or lookup(pool.storageVolLookupByName, vol) is None:
            p.append(f"host {h}: volume {vol} is in the Terraform state but not in pool {pool_name}")
            continue
        res.volumes[vol] = f"{pool_dirs[pool_name]}/{vol}"
    seed = tf.seeds.get(node.name)
    main_pool = lookup(conn.storagePoolLookupByName, names.main_pool)
    if seed is None or main_pool is None or lookup(main_pool.storageVolLookupByName, seed) is None:
        p.append(f"host {h}: the cloud-init volume of {node.name} ({seed or 'none in the Terraform state'}) is "
                 f"not in pool {names.main_pool}")
        return
    res.macs[node.name], res.seeds[node.name] = mac, seed
    d = vms_layer.node_definition(cluster=cluster, node=node, mac=mac, net=net, tpl=tpl, domain_type=dtype,
                                  pool_dirs=pool_dirs, adopted_seed=seed)
    ip = node.ip or _tf_address(attrs)
    res.nodes[node.name] = {"name": node.name, "host": h, "role": node.role, "id": node.id, "ip": ip, "mac": mac,
                            "domain": node.name, "dhcp": bool(node.dhcp), "domain_type": dtype,
                            "volumes": [path for path, _f in d.disks] + [d.seed_path], "ready": True}
    if tag is not None and tag.get("name") == cluster and tag.get("spec") == d.digest:
        res.changes.append(Change("keep", "domain", node.name, h, "adopted already"))
        return
    # setMetadata takes the element without namespace: libvirt puts it in METADATA_NS under our prefix
    attrs = {"name": cluster, "node": node.id, "role": node.role, "spec": d.digest, "adopted": ORIGINAL}
    meta = "<cluster " + " ".join(f'{k}="{v}"' for k, v in attrs.items()) + "/>"
    res.tag_domains.append((dom, meta))
    res.changes.append(Change("change", "domain", node.name, h, f"tagged for cluster {cluster} (adopted from "
                                                                f"{ORIGINAL}; definition, disks and state unchanged)"))


def _plan_reservations(conn, ctx, h, net, nodes: list[Node], res: HostAdoption) -> None:
    """The DHCP reservations this provider keeps that Kubitect's network lacks (the VIP's)."""
    if net.mode != "nat" or res.network is None:
        return
    obj = lookup(conn.networkLookupByName, Names(ctx.cluster).network)
    if obj is None:
        return
    have = {(r.mac, r.name, r.ip) for r in network_layer._current_reservations(obj.XMLDesc(0))}
    pairs = [(n, res.macs[n.name]) for n in nodes if n.name in res.macs]
    for r in network_layer.reservations(net, pairs, ctx.topology.vip, ctx.cluster):
        if (r.mac, r.name, r.ip) not in have:
            res.reservations.append(r)
            res.changes.append(Change("change", "network", Names(ctx.cluster).network, h,
                                      f"reserved {r.ip} for {r.name} (DHCP)"))


def tag(conn: libvirt.virConnect, res: HostAdoption) -> None:
    """Writes what `inspect_host` prepared: the tags (persistent, and live where running) and the
    missing DHCP reservations. Nothing is renamed, redefined in shape, stopped or restarted."""
    for dom, meta in res.tag_domains:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, METADATA_PREFIX, METADATA_NS, flags)
    if res.tag_network is not None:
        conn.networkDefineXML(res.tag_network[1])  # same name and UUID: the persistent definition gains the tag
    if res.reservations:
        net = conn.networkLookupByName(res.network["name"])
        for r in res.reservations:
            network_layer._update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, r)


# ------------------------------------------------------------------ all hosts
async def adopt(hosts_obj: Hosts, template, layers: Mapping[str, StageContext], hosts: list[str],
                tfstate: dict[str, Any], dry_run: bool) -> list[Change]:
    """See `LibvirtProvider.adopt_kubitect`."""
    vms_ctx = layers["vms"]
    by_host = tf_hosts(tfstate)
    tpl = template(vms_ctx)
    found: dict[str, HostAdoption] = {}

    async def inspect(spec: HostSpec, hc: HostConnection) -> list[Change]:
        found[spec.name] = await hc.call(lambda c: inspect_host(c, ctx=vms_ctx, spec=spec,
                                                                tf=by_host.get(spec.name), tpl=tpl))
        return []

    await hosts_obj.each(vms_ctx, hosts, inspect, record=False)
    problems = [line for h in hosts for line in found[h].problems]
    problems += [f"host {h}: in Kubitect's Terraform state, but not in the config's hosts"
                 for h in sorted(set(by_host) - set(found)) if by_host[h].domains or by_host[h].pools]
    if problems:
        raise StageError(f"cannot adopt cluster '{vms_ctx.cluster}': Kubitect's Terraform state, its applied config "
                         "and the libvirt hosts do not agree; nothing was changed:\n  - " + "\n  - ".join(problems))
    changes = [c for h in hosts for c in found[h].changes]
    if dry_run:
        return changes

    async def write(spec: HostSpec, hc: HostConnection) -> list[Change]:
        await hc.call(lambda c: tag(c, found[spec.name]))
        return []

    for ctx in layers.values():  # each layer's record: how each host is reached
        await hosts_obj.each(ctx, hosts, write if ctx is vms_ctx else _nothing, record=True)
    adopted = {"from": ORIGINAL, "serial": tfstate.get("serial"), "lineage": tfstate.get("lineage"),
               "macs": {n: m for h in hosts for n, m in found[h].macs.items()},
               "seeds": {n: s for h in hosts for n, s in found[h].seeds.items()},
               "base_volumes": {h: found[h].base_volume for h in hosts if found[h].base_volume},
               "networks": {h: found[h].network["name"] for h in hosts if (found[h].network or {}).get("name")}}
    for ctx in layers.values():
        ctx.record[KEY] = adopted
    for h in hosts:
        f = found[h]
        if f.network is not None:
            layers["network"].record.setdefault("networks", {})[h] = f.network
        layers["storage"].record.setdefault("pools", {})[h] = f.pools
        layers["storage"].record.setdefault("volumes", {})[h] = {
            **({f.base_volume: f"{f.pools.get(Names(vms_ctx.cluster).main_pool, '')}/{f.base_volume}"}
               if f.base_volume else {}), **f.volumes}
        layers["storage"].record.setdefault("base_uploaded", {})[h] = True
        if f.domain_type:
            layers["vms"].record.setdefault("hosts", {}).setdefault(h, {})["domain_type"] = f.domain_type
        layers["vms"].record.setdefault("nodes", {}).update(f.nodes)
    return changes


async def _nothing(spec: HostSpec, hc: HostConnection) -> list[Change]:
    return []
