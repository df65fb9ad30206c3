"""Finding what belongs to a cluster on a host, also when the recorded state is lost.

Domains and networks carry `<metadata><kubitect:cluster name="..."/></metadata>` (namespace
`https://kubitect.dev/xmlns/1`): that tag is authoritative. Storage pools and volumes have no
metadata element in libvirt, so they are owned by name: pools are per cluster
(`<cluster>-main-resource-pool`, `<cluster>-<pool>-data-resource-pool`) and every volume the
provider makes starts with `<cluster>-`. When a data-pool name could belong to two clusters
(cluster `a` with pool `b-x` versus cluster `a-b` with pool `x`), the longest cluster name known
on the host (from metadata or main-pool names) wins.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Any

from kubitect_core.sdk import lazy_import

from .connection import lookup
from .spec import METADATA_NS, Names

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

_TAG = f"{{{METADATA_NS}}}cluster"
MAIN_SUFFIX = "-main-resource-pool"
DATA_SUFFIX = "-data-resource-pool"


Tags = dict[str, tuple["libvirt.virDomain", dict[str, str]]]  # domain name -> (domain, tag attributes)


def metadata_of(xml: str) -> dict[str, str] | None:
    """The attributes of our metadata element in a domain or network XML, or None if untagged."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    meta = root.find("metadata")
    if meta is None:
        return None
    el = meta.find(_TAG)
    return dict(el.attrib) if el is not None else None


def persistent_xml(net: libvirt.virNetwork) -> str:
    """A network's persistent definition (the live one where the driver offers no other, e.g. the
    test driver)."""
    try:
        return net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError:
        return net.XMLDesc(0)


def network_tag(net: libvirt.virNetwork) -> dict[str, str] | None:
    """Our tag on a network, read from its persistent definition: a running network adopted from
    Kubitect (Go) got the tag there (libvirt-python 9.0 has no virNetworkSetMetadata), and its live
    XML shows it only after the next restart. (Adopted networks are also owned by their recorded
    name: see `adopted`.)"""
    return metadata_of(persistent_xml(net))


def domain_tags(conn: libvirt.virConnect) -> Tags:
    """Every tagged domain on the host: name -> (domain, metadata attributes).

    The tag of the persistent definition: a running VM redefined by apply keeps its old live XML
    until it restarts, and comparing that spec would report the same change on every apply.
    """
    out = {}
    for dom in conn.listAllDomains(0):
        tag = metadata_of(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if tag is not None:
            out[dom.name()] = (dom, tag)
    return out


def cluster_domains(conn: libvirt.virConnect, cluster: str) -> dict[str, libvirt.virDomain]:
    """The cluster's domains, found by their metadata tag."""
    return {name: dom for name, (dom, tag) in domain_tags(conn).items() if tag.get("name") == cluster}


def cluster_networks(conn: libvirt.virConnect, cluster: str) -> dict[str, libvirt.virNetwork]:
    """The cluster's networks, found by their metadata tag."""
    out = {}
    for net in conn.listAllNetworks(0):
        tag = network_tag(net)
        if tag is not None and tag.get("name") == cluster:
            out[net.name()] = net
    return out


def add_recorded(found: dict[str, Any], recorded: Iterable[str], find: Callable[[str], Any],
                 cluster: str) -> dict[str, Any]:
    """Adds to `found` each recorded name that still exists, is tagged for `cluster` or is untagged.

    Why: destroy must also remove what the record names but the tag search missed (a tag lost
    or never written), yet never an object another cluster's tag claims. `find` is libvirt's
    lookup-by-name for the kind (e.g. `conn.networkLookupByName`).
    """
    for name in recorded:
        obj = lookup(find, name)
        if obj is not None and name not in found:
            tag = metadata_of(obj.XMLDesc(0))
            if tag is None or tag.get("name") == cluster:
                found[name] = obj
    return found


def known_clusters(conn: libvirt.virConnect, tags: Tags | None = None) -> set[str]:
    """Cluster names visible on a host: from tags and from main-pool names. `tags`: the host's
    `domain_tags`, when the caller has read them already (reading them is the costly part)."""
    names = {tag.get("name", "") for _d, tag in (domain_tags(conn) if tags is None else tags).values()}
    for net in conn.listAllNetworks(0):
        tag = network_tag(net)
        if tag is not None:
            names.add(tag.get("name", ""))
    for pool in conn.listAllStoragePools(0):
        if pool.name().endswith(MAIN_SUFFIX):
            names.add(pool.name()[: -len(MAIN_SUFFIX)])
    names.discard("")
    return names


def cluster_pools(conn: libvirt.virConnect, cluster: str, known: set[str] | None = None,
                  tags: Tags | None = None) -> dict[str, libvirt.virStoragePool]:
    """The cluster's pools by name: its main pool, its data pools, and any name in `known`."""
    names = Names(cluster)
    others = {c for c in known_clusters(conn, tags) if c != cluster and c.startswith(cluster + "-")}
    data_re = re.compile(rf"{re.escape(cluster)}-(.+){DATA_SUFFIX}")
    out = {}
    for pool in conn.listAllStoragePools(0):
        name = pool.name()
        if name == names.main_pool or name in (known or set()):
            out[name] = pool
        elif data_re.fullmatch(name) and not any(name.startswith(o + "-") for o in others):
            out[name] = pool
    return out


def cluster_volumes(pool: libvirt.virStoragePool, cluster: str) -> dict[str, libvirt.virStorageVol]:
    """Volumes in one of the cluster's pools that the provider made (name starts `<cluster>-`)."""
    if not pool.isActive():
        return {}
    pool.refresh(0)
    return {v.name(): v for v in pool.listAllVolumes(0) if v.name().startswith(cluster + "-")}
