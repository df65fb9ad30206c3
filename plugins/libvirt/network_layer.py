"""The network layer on one host: the cluster's libvirt network in nat and route modes.

Bridge mode creates nothing (the VMs attach to the host's existing bridge). In nat mode every
node with an IP gets a DHCP host reservation by MAC, so the guest can use DHCP and still get its
configured address. A node without an IP (DHCP) gets a reservation of the address it was first
leased, made by the vms layer once the lease is known (`pin`), so its address survives reboots
and lease expiry; this layer keeps such reservations for as long as the node is in the topology.
No nwfilter is attached: the VRRP VIP must be able to move between VMs.

Runs on the host's worker thread; `dry_run` makes it a plan (nothing touched).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kubitect_core.sdk import Change, Node, lazy_import

from .connection import lookup
from .ownership import add_recorded, cluster_networks, network_tag
from .render import render, spec_hash
from .spec import METADATA_NS, METADATA_PREFIX, NetSpec

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)


@dataclass(frozen=True)
class Reservation:
    mac: str  # "" for an address held by name only (the VIP): no machine has that MAC
    name: str
    ip: str

    def xml(self) -> str:
        mac = f"mac='{self.mac}' " if self.mac else ""
        return f"<host {mac}name='{self.name}' ip='{self.ip}'/>"


def dhcp_range(net: NetSpec) -> tuple[str, str]:
    """The DHCP range: every usable address of the CIDR after the gateway."""
    first = int(net.cidr.network_address) + 1
    last = int(net.cidr.broadcast_address) - 1
    gw = int(ipaddress.IPv4Address(net.gateway))
    start = gw + 1 if first <= gw < last else first
    return str(ipaddress.IPv4Address(start)), str(ipaddress.IPv4Address(last))


def vip_name(cluster: str) -> str:
    """The reservation name that holds the VIP (`<cluster>-vip`: no node is named so)."""
    return f"{cluster}-vip"


def reservations(net: NetSpec, nodes: list[tuple[Node, str]], vip: str | None = None,
                 cluster: str = "") -> list[Reservation]:
    """DHCP reservations (nat mode only), sorted by name: one per node with an IP, by MAC, and
    one holding the VIP by name. dnsmasq leases no reserved address to anyone else, so a DHCP
    node can get neither a configured node's address nor the VIP keepalived will claim."""
    if net.mode != "nat":
        return []
    out = [Reservation(mac, n.name, n.ip) for n, mac in nodes if n.ip]
    if vip:
        out.append(Reservation("", vip_name(cluster), vip))
    return sorted(out, key=lambda r: r.name)


def network_xml(cluster: str, net: NetSpec, res: list[Reservation]) -> tuple[str, str]:
    """(XML, core spec digest) of the cluster network; reservations are not part of the digest
    because they are updated in place, without restarting the network."""
    start, end = dhcp_range(net)
    core = {"mode": net.mode, "bridge": net.bridge, "gateway": net.gateway, "prefix": net.prefix,
            "start": start, "end": end}
    digest = spec_hash(core)
    xml = render("network.xml.j2", name=f"{cluster}-network", cluster=cluster, ns=METADATA_NS,
                 ns_prefix=METADATA_PREFIX, spec=digest, mode=net.mode, bridge=net.bridge,
                 gateway=net.gateway, prefix=net.prefix, dhcp_start=start, dhcp_end=end,
                 reservations=res)
    return xml, digest


def _current_reservations(xml: str) -> set[Reservation]:
    root = ET.fromstring(xml)
    return {Reservation(h.get("mac", "").lower(), h.get("name", ""), h.get("ip", ""))
            for h in root.findall("./ip/dhcp/host")}


def _bridge_of(xml: str) -> str | None:
    el = ET.fromstring(xml).find("bridge")
    return el.get("name") if el is not None else None


def pinned(reserved: set[Reservation], nodes: list[tuple[Node, str]]) -> set[Reservation]:
    """The reservations of DHCP nodes (their leases, pinned by the vms layer) among `reserved`."""
    dhcp = {(mac.lower(), n.name) for n, mac in nodes if not n.ip}
    return {r for r in reserved if (r.mac, r.name) in dhcp}


def pin(conn: libvirt.virConnect, network: str, res: Reservation) -> bool:
    """Reserves `res.ip` for `res.mac` in the network (live and persistent); True when it changed.

    An entry of the same MAC (or name) with another address is replaced, so the reservation always
    says what the vms layer recorded.
    """
    net = conn.networkLookupByName(network)
    current = _current_reservations(net.XMLDesc(0))
    if res in current:
        return False
    for old in current:
        if old.mac == res.mac or old.name == res.name:
            _update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, old)
    _update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, res)
    return True


def _update_host(net: libvirt.virNetwork, command: int, res: Reservation) -> None:
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, res.xml(), flags)


def _remove(net: libvirt.virNetwork) -> None:
    if net.isActive():
        net.destroy()
    net.undefine()


def converge(conn: libvirt.virConnect, *, cluster: str, host: str, net: NetSpec,
             nodes: list[tuple[Node, str]], dry_run: bool, vip: str | None = None,
             adopted: bool = False) -> tuple[list[Change], dict | None]:
    """Plans or applies the host's cluster network; returns the changes and the record entry.

    `adopted`: the network was taken over from Kubitect (Go) and is the cluster's by its recorded
    name also where the driver cannot show the tag adoption added to its persistent definition."""
    changes: list[Change] = []
    name = f"{cluster}-network"
    stale = {n: obj for n, obj in cluster_networks(conn, cluster).items() if n != name or net.mode == "bridge"}
    for sname, obj in sorted(stale.items()):
        changes.append(Change("delete", "network", sname, host))
        if not dry_run:
            _remove(obj)
    if net.mode == "bridge":
        return changes, {"mode": "bridge", "bridge": net.bridge}
    res = reservations(net, nodes, vip, cluster)
    xml, digest = network_xml(cluster, net, res)
    existing = lookup(conn.networkLookupByName, name)
    if existing is not None:
        tag = network_tag(existing)
        if tag is None and adopted:
            tag = {"name": cluster, "spec": digest}
        if tag is None or tag.get("name") != cluster:
            raise RuntimeError(f"host {host}: a network named {name} exists but was not made for "
                               f"cluster {cluster}; remove or rename it")
        if tag.get("spec") != digest:
            changes.append(Change("change", "network", name, host, "recreated: mode, bridge or CIDR changed"))
            if not dry_run:
                _remove(existing)
                existing = None
    if existing is None:
        if not any(c.action == "change" for c in changes):
            changes.append(Change("create", "network", name, host, f"{net.mode} {net.cidr}"))
        if dry_run:
            return changes, {"name": name, "mode": net.mode, "bridge": net.bridge}
        existing = conn.networkDefineXML(xml)
        existing.setAutostart(1)
        existing.create()
        return changes, {"name": name, "mode": net.mode, "bridge": _bridge_of(existing.XMLDesc(0))}
    have = _current_reservations(existing.XMLDesc(0))
    want = set(res) | pinned(have, nodes)
    added, removed = sorted(want - have, key=str), sorted(have - want, key=str)
    started = not existing.isActive()
    if added or removed or started:
        parts = [f"+{len(added)} reservations"] if added else []
        parts += [f"-{len(removed)} reservations"] if removed else []
        parts += ["started"] if started else []
        changes.append(Change("change", "network", name, host, ", ".join(parts)))
        if not dry_run:
            for r in removed:
                _update_host(existing, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, r)
            for r in added:
                _update_host(existing, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, r)
            if started:
                existing.create()
            existing.setAutostart(1)
    else:
        changes.append(Change("keep", "network", name, host))
    return changes, {"name": name, "mode": net.mode, "bridge": _bridge_of(existing.XMLDesc(0))}


def destroy(conn: libvirt.virConnect, *, cluster: str, host: str,
            recorded: list[str]) -> list[Change]:
    """Removes the cluster's networks: every one tagged for it, plus recorded ones if still tagged."""
    changes = []
    found = add_recorded(cluster_networks(conn, cluster), recorded, conn.networkLookupByName, cluster)
    for name, obj in sorted(found.items()):
        _remove(obj)
        changes.append(Change("delete", "network", name, host))
    return changes
