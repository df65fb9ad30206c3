"""Pure rendering of haproxy.cfg, keepalived.conf and the HAProxy check script from a Topology.

Nothing here touches a node: the plugin (and the lab, and the golden-file tests) call these
functions with a topology whose load balancer and backend IPs are known.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2

from kubitect_core.sdk import Node, Topology

from .settings import VrrpSettings

API_PORT = 6443
Mode = Literal["none", "haproxy", "vrrp"]
Target = Literal["workers", "masters", "all"]


@dataclass(frozen=True)
class ForwardPort:
    """One `forwardPorts` entry: HAProxy listens on `port` and sends to `target_port` on `target`."""

    name: str
    port: int
    target_port: int | None = None
    target: Target = "workers"


@dataclass(frozen=True)
class Layout:
    """Where things live on a load balancer; the lab overrides paths to run several on one machine."""

    haproxy_cfg: str = "/etc/haproxy/haproxy.cfg"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    check_script: str = "/etc/keepalived/check_haproxy.sh"
    stats_socket: str = "/run/haproxy/admin.sock"
    chroot: str = "/var/lib/haproxy"
    health_port: int = 8404  # 127.0.0.1 only: tracked by keepalived
    whoami_port: int = 8405  # on the VIP only: names the holder


@dataclass(frozen=True)
class Rendered:
    """The files for one load balancer node, keyed by their path on the node."""

    node: str
    files: dict[str, str]

    def hashes(self) -> dict[str, str]:
        """Content hashes, recorded in the state so a re-run can tell unchanged from changed."""
        return {path: content_hash(text) for path, text in self.files.items()}


def content_hash(text: str | bytes) -> str:
    """sha256 of a file's content: equal hashes mean there is nothing to upload or reload."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def lb_mode(topology: Topology) -> Mode:
    """What runs on the load balancers (kubitect.md 4): nothing, HAProxy only, or HAProxy + VRRP.

    0 LBs: nothing (the endpoint is the first master). 1 LB without VIP: HAProxy only, no
    keepalived (also when the one LB's own IP is given as the VIP). A VIP (1 LB or more):
    HAProxy + keepalived on every LB.
    """
    if not topology.load_balancers:
        return "none"
    if topology.vip is None:
        if len(topology.load_balancers) > 1:
            raise ValueError("cluster.nodes.loadBalancer.vip is required with more than one load balancer")
        return "haproxy"
    if len(topology.load_balancers) == 1 and topology.vip == topology.load_balancers[0].ip:
        return "haproxy"  # the original removes keepalived when the "VIP" is the LB's own address
    return "vrrp"


def endpoint(topology: Topology) -> str:
    """The API server address later stages use: the VIP, else the single LB, else the first master."""
    if topology.vip:
        return topology.vip
    if topology.load_balancers:
        return _ip(topology.load_balancers[0])
    if topology.masters:
        return _ip(topology.masters[0])
    return topology.endpoint


def derived_router_id(cluster: str) -> int:
    """A stable virtual_router_id (1-255) from the cluster name, for topologies that carry none."""
    return int(hashlib.sha256(cluster.encode()).hexdigest(), 16) % 255 + 1


def _ip(node: Node) -> str:
    if not node.ip:
        raise ValueError(f"node {node.name} has no known IP address; the load balancer needs one")
    return node.ip


def _servers(nodes: Iterable[Node]) -> list[dict[str, str]]:
    return [{"name": n.name, "ip": _ip(n)} for n in nodes]


def forward_backends(topology: Topology, port: ForwardPort) -> list[Node]:
    """Backends of one forward port: workers/masters/all; masters when the cluster has no workers."""
    nodes: list[Node] = []
    if port.target in ("masters", "all") or not topology.workers:
        nodes.extend(topology.masters)
    if port.target in ("workers", "all"):
        nodes.extend(topology.workers)
    return nodes


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    return env


def _num(value: float) -> str:
    """Write 1.0 as 1 and 0.50 as 0.5: keepalived reads both, humans and diffs prefer the short form."""
    return f"{float(value):g}"


def render_haproxy(topology: Topology, node: Node, forward_ports: Iterable[ForwardPort] = (),
                   layout: Layout = Layout()) -> str:
    """haproxy.cfg for one LB: 6443 to all masters with a TLS /readyz check, one pair per forward port."""
    ports = []
    for fp in forward_ports:
        ports.append({"name": fp.name, "port": fp.port, "target_port": fp.target_port or fp.port,
                      "servers": _servers(forward_backends(topology, fp))})
    return _env().get_template("haproxy.cfg.j2").render(
        cluster=topology.cluster, node_name=node.name, vip=topology.vip, api_port=API_PORT,
        masters=_servers(topology.masters), forward_ports=ports, layout=layout)


def instance_name(cluster: str) -> str:
    """keepalived's vrrp_instance name for the cluster (one instance per cluster)."""
    return "kubitect_" + re.sub(r"[^A-Za-z0-9_]", "_", cluster)


def render_keepalived(topology: Topology, node: Node, nic: str, vrrp: VrrpSettings = VrrpSettings(),
                      layout: Layout = Layout()) -> str:
    """keepalived.conf for one LB: one VRRP instance holding the VIP, HAProxy tracked by a script."""
    if not topology.vip:
        raise ValueError("keepalived needs cluster.nodes.loadBalancer.vip")
    peers = [] if not vrrp.unicast else [{"ip": _ip(n)} for n in topology.load_balancers
                                         if n.name != node.name]
    vrid = topology.virtual_router_id or derived_router_id(topology.cluster)
    return _env().get_template("keepalived.conf.j2").render(
        cluster=topology.cluster, node={"name": node.name, "ip": _ip(node),
                                        "priority": node.priority if node.priority is not None else 10},
        nic=nic, vip=topology.vip, virtual_router_id=vid_check(vrid), vrrp=vrrp, peers=peers,
        instance=instance_name(topology.cluster), layout=layout,
        check_timeout=check_timeout(vrrp))


def vid_check(vrid: int) -> int:
    """VRRP router IDs are 1-255 on the wire; 0 is rejected by keepalived."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"virtualRouterId must be 1-255 (got {vrid})")
    return vrid


def check_timeout(vrrp: VrrpSettings) -> int:
    """keepalived's script timeout (whole seconds); a local HTTP answer needs milliseconds."""
    return 1


def render_check_script(layout: Layout = Layout(), vrrp: VrrpSettings = VrrpSettings()) -> str:
    """The vrrp_script body: asks the local HAProxy health endpoint, needs only bash."""
    read_timeout = _num(check_timeout(vrrp) * 0.8)
    return _env().get_template("check_haproxy.sh.j2").render(layout=layout, read_timeout=read_timeout)


def render_node(topology: Topology, node: Node, nic: str, forward_ports: Iterable[ForwardPort] = (),
                vrrp: VrrpSettings = VrrpSettings(), layout: Layout = Layout()) -> Rendered:
    """Every file one LB node needs in the topology's mode (keepalived files only with a VIP)."""
    files = {layout.haproxy_cfg: render_haproxy(topology, node, forward_ports, layout)}
    if lb_mode(topology) == "vrrp":
        files[layout.keepalived_conf] = render_keepalived(topology, node, nic, vrrp, layout)
        files[layout.check_script] = render_check_script(layout, vrrp)
    return Rendered(node=node.name, files=files)


def render_all(topology: Topology, nic: str, forward_ports: Iterable[ForwardPort] = (),
               vrrp: VrrpSettings = VrrpSettings(), layout: Layout = Layout()) -> list[Rendered]:
    """Files for every LB of the cluster ([] with no load balancers)."""
    ports = list(forward_ports)
    return [render_node(topology, n, nic, ports, vrrp, layout) for n in topology.load_balancers]
