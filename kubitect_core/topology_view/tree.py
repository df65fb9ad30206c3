"""The topology as a rich Tree, for the terminal (the default output of `kubitect topology`).

Every config-derived string goes in as a `Text` object, never as markup, so a name containing
`[bold]` or `[/]` is printed as written instead of being interpreted (or raising).
"""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from kubitect_core.topology import Node
from kubitect_core.topology_view.model import (
    ROLE_LABELS,
    HostView,
    TopologyView,
    disks_line,
    gib,
    plural,
    resources_line,
)

ROLE_STYLES = {"lb": "bold yellow", "master": "bold blue", "worker": "bold green"}
ROLE_TAGS = {"lb": "LB", "master": "master", "worker": "worker"}


def _text(*parts: str | tuple[str, str]) -> Text:
    return Text.assemble(*parts)


def node_label(node: Node) -> Text:
    label = _text((f"{ROLE_TAGS[node.role]:6} ", ROLE_STYLES[node.role]), (node.name, "bold"), "  ",
                  (node.ip or "DHCP", "cyan" if node.ip else "magenta"), "  ",
                  f"{resources_line(node.cpu, node.ram_gib)} · {gib(node.main_disk_gib)} disk")
    if node.role == "lb":
        label.append(f"  priority {node.priority}", style="dim")
    return label


def host_label(host: HostView) -> Text:
    label = _text(("host ", "dim"), (host.name, "bold"), f"  {host.reach} · {host.provider}")
    if host.default:
        label.append("  (default)", style="dim")
    t = host.totals
    label.append(f"\n{plural(t.nodes, 'node')} · {resources_line(t.cpu, t.ram_gib)} · "
                 f"disk {disks_line(t.disk_gib)}", style="italic")
    return label


def build_tree(view: TopologyView) -> Tree:
    """Cluster at the root; network and VIP; then each host with its nodes and their data disks."""
    root = Tree(_text(("cluster ", "dim"), (view.cluster, "bold"), f"  kubernetes {view.kubernetes.summary}"))
    root.add(_text(("network ", "dim"), view.network.summary))
    if view.vip:
        lbs = ", ".join(n.name for n in view.vip_holders) or "none"
        vip = root.add(_text(("VIP ", "bold magenta"), (view.vip, "magenta"),
                             f"  VRRP id {view.virtual_router_id} · held by one of: {lbs}"))
        for p in view.forward_ports:
            vip.add(_text(("forwards ", "dim"), f"{p.name} :{p.port} → {p.target} :{p.target_port}"))
    else:
        root.add(_text(("endpoint ", "dim"), f"{view.endpoint or 'assigned by DHCP'}:{view.api_port} (no VIP)"))
    for host in view.hosts:
        branch = root.add(host_label(host))
        if not host.nodes:
            branch.add(Text("no nodes", style="dim italic"))
        for node in host.nodes:
            leaf = branch.add(node_label(node))
            for d in node.data_disks:
                leaf.add(_text(("disk ", "dim"), (d.name, "bold"), f"  {gib(d.size_gib)} in pool {d.pool}"))
    t = view.totals
    roles = ", ".join(plural(sum(1 for n in view.nodes if n.role == r), ROLE_LABELS[r]) for r in ROLE_LABELS)
    root.add(_text(("total ", "bold"), f"{plural(t.nodes, 'node')} ({roles}) on {plural(len(view.hosts), 'host')} · "
                   f"{resources_line(t.cpu, t.ram_gib)} · "
                   f"disk {disks_line(t.disk_gib)}"))
    return root
