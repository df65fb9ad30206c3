"""Pure rendering of haproxy.cfg, keepalived.conf, the HAProxy check script and HAProxy's exit
hook (a systemd drop-in) from a Topology.

Nothing here touches a node: the plugin (and the lab, and the golden-file tests) call these
functions with a topology whose load balancer and backend IPs are known, and with what the node
was found to support (`NodeFeatures`, probed by node_ops).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kubitect_core.sdk import Node, Topology, lazy_import
from kubitect_core.sdk.kube import API_SERVER_PORT

from .settings import VrrpSettings, ranked_priorities

jinja2 = lazy_import("jinja2")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

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

    # Where HAProxy serves the API (the endpoint's port) and where the API servers listen. Equal on
    # load balancer VMs; on the masters themselves HAProxy needs its own port (control-plane-vip).
    api_port: int = API_SERVER_PORT
    backend_port: int = API_SERVER_PORT
    haproxy_cfg: str = "/etc/haproxy/haproxy.cfg"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    check_script: str = "/etc/keepalived/check_haproxy.sh"
    stats_socket: str = "/run/haproxy/admin.sock"
    chroot: str = "/var/lib/haproxy"
    health_port: int = 8404  # 127.0.0.1 only: tracked by keepalived
    whoami_port: int = 8405  # on the VIP only: names the holder
    # trackHaproxyExit: haproxy.service writes 1 (stopped) or 0 (running) here; keepalived tracks it
    haproxy_dropin: str = "/etc/systemd/system/haproxy.service.d/50-kubitect-exit.conf"
    haproxy_down_file: str = "/run/kubitect-haproxy.down"
    # realtime: keepalived.service runs with SCHED_RR
    keepalived_dropin: str = "/etc/systemd/system/keepalived.service.d/50-kubitect-realtime.conf"

    @property
    def dropins(self) -> tuple[str, ...]:
        """systemd drop-ins kubitect may manage (a change means `systemctl daemon-reload`)."""
        return (self.haproxy_dropin, self.keepalived_dropin)

    def service_files(self, service: str) -> tuple[str, ...]:
        """The managed files whose change means reloading (or restarting) `service`."""
        return {"haproxy": (self.haproxy_cfg,),
                "keepalived": (self.keepalived_conf, self.check_script, self.keepalived_dropin)}.get(service, ())


@dataclass(frozen=True)
class NodeFeatures:
    """What a load balancer node's kernel lets keepalived do (node_ops.probe_features finds out).

    process_events: the kernel's process-events connector answers in keepalived's network
        namespace (a VM or a host: yes; a container in its own network namespace: no, and
        `vrrp_track_process` would then hold the instance in FAULT forever).
    realtime: systemd may start a service with SCHED_RR (a cgroup without real-time budget, or a
        missing CAP_SYS_NICE, refuses it, and the service would then fail to start).
    memlock: keepalived may lock itself in memory (CAP_IPC_LOCK; containers usually lack it).
    """

    process_events: bool = False
    realtime: bool = False
    memlock: bool = False


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
    """haproxy.cfg for one LB: the API port to all masters with a TLS /readyz check, one pair per forward port."""
    ports = []
    for fp in forward_ports:
        ports.append({"name": fp.name, "port": fp.port, "target_port": fp.target_port or fp.port,
                      "servers": _servers(forward_backends(topology, fp))})
    return _env().get_template("haproxy.cfg.j2").render(
        cluster=topology.cluster, node_name=node.name, vip=topology.vip,
        masters=_servers(topology.masters), forward_ports=ports, layout=layout)


def instance_name(cluster: str) -> str:
    """keepalived's vrrp_instance name for the cluster (one instance per cluster)."""
    return "kubitect_" + re.sub(r"[^A-Za-z0-9_]", "_", cluster)


def priorities(topology: Topology, vrrp: VrrpSettings) -> dict[str, int]:
    """The priority keepalived gets on each load balancer (settings.ranked_priorities)."""
    return ranked_priorities({n.name: n.priority for n in topology.load_balancers}, vrrp)


def render_keepalived(topology: Topology, node: Node, nic: str, vrrp: VrrpSettings = VrrpSettings(),
                      layout: Layout = Layout(), features: NodeFeatures = NodeFeatures()) -> str:
    """keepalived.conf for one LB: one VRRP instance holding the VIP, HAProxy tracked by a script
    (and by its exit, when `trackHaproxyExit` is on)."""
    if not topology.vip:
        raise ValueError("keepalived needs cluster.nodes.loadBalancer.vip")
    peers = [] if not vrrp.unicast else [{"ip": _ip(n)} for n in topology.load_balancers
                                         if n.name != node.name]
    vrid = topology.virtual_router_id or derived_router_id(topology.cluster)
    priority = priorities(topology, vrrp)[node.name]
    return _env().get_template("keepalived.conf.j2").render(
        cluster=topology.cluster, node={"name": node.name, "ip": _ip(node), "priority": priority,
                                        "configured": node.priority},
        nic=nic, vip=topology.vip, virtual_router_id=vid_check(vrid), vrrp=vrrp, peers=peers,
        instance=instance_name(topology.cluster), layout=layout, features=features,
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


def render_exit_hook(layout: Layout = Layout()) -> str:
    """The haproxy.service drop-in that reports HAProxy's exit to keepalived's tracked file."""
    return _env().get_template("haproxy-exit.conf.j2").render(layout=layout)


def render_realtime(layout: Layout = Layout()) -> str:
    """The keepalived.service drop-in that runs keepalived with SCHED_RR."""
    return _env().get_template("keepalived-realtime.conf.j2").render(layout=layout)


def render_node(topology: Topology, node: Node, nic: str, forward_ports: Iterable[ForwardPort] = (),
                vrrp: VrrpSettings = VrrpSettings(), layout: Layout = Layout(),
                features: NodeFeatures = NodeFeatures()) -> Rendered:
    """Every file one LB node needs in the topology's mode (keepalived files only with a VIP)."""
    files = {layout.haproxy_cfg: render_haproxy(topology, node, forward_ports, layout)}
    if lb_mode(topology) == "vrrp":
        files[layout.keepalived_conf] = render_keepalived(topology, node, nic, vrrp, layout, features)
        files[layout.check_script] = render_check_script(layout, vrrp)
        if vrrp.track_haproxy_exit:
            files[layout.haproxy_dropin] = render_exit_hook(layout)
        if vrrp.realtime and features.realtime:
            files[layout.keepalived_dropin] = render_realtime(layout)
    return Rendered(node=node.name, files=files)


def render_all(topology: Topology, nic: str, forward_ports: Iterable[ForwardPort] = (),
               vrrp: VrrpSettings = VrrpSettings(), layout: Layout = Layout(),
               features: NodeFeatures = NodeFeatures()) -> list[Rendered]:
    """Files for every LB of the cluster ([] with no load balancers); one feature set for all."""
    ports = list(forward_ports)
    return [render_node(topology, n, nic, ports, vrrp, layout, features) for n in topology.load_balancers]
