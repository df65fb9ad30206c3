"""The cluster as every installer sees it: endpoint, API URL, certificate names, taints, labels, CIDRs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from kubitect_core import kubeconfig
from kubitect_core.contracts import StageContext
from kubitect_core.stage import StageError
from kubitect_core.topology import Node

# The port every API server itself listens on (an installer's bindPort, kubeadm's and k3s's
# default). The endpoint's port is the load balancer's to say (`api_port`): equal on load balancer
# VMs, different when HAProxy shares the masters with the API servers.
API_SERVER_PORT = 6443
API_PORT = API_SERVER_PORT  # the old name, kept for plugins written against it


def endpoint(ctx: StageContext) -> str:
    """The control-plane endpoint the loadbalancers stage recorded, else the topology's."""
    recorded = (ctx.facts.get("loadbalancers") or {}).get("endpoint")
    return str(recorded or ctx.topology.endpoint)


def api_port(ctx: StageContext) -> int:
    """The port clients reach the API at through the endpoint: what the load balancer recorded
    (`ctx.record["port"]` of the loadbalancers stage), else the API servers' own port."""
    recorded = (ctx.facts.get("loadbalancers") or {}).get("port")
    return int(recorded) if recorded else API_SERVER_PORT


def endpoint_address(ctx: StageContext) -> str:
    """`<endpoint>:<port>` (IPv6 bracketed), as kubeadm's controlPlaneEndpoint and joins want it."""
    host = endpoint(ctx)
    return f"[{host}]:{api_port(ctx)}" if ":" in host else f"{host}:{api_port(ctx)}"


def api_url(ctx: StageContext) -> str:
    """`https://<endpoint>:<port>`, what every joining node and the kubeconfig use."""
    return kubeconfig.endpoint_url(endpoint(ctx), api_port(ctx))


def cert_sans(ctx: StageContext) -> list[str]:
    """Names the API server certificate must carry: endpoint, VIP, every LB and master IP.

    Why the masters too: `kubectl` on a master and HAProxy health checks address them directly.
    Order is stable (endpoint, VIP, LBs, masters) so the rendered config is deterministic.
    """
    topo = ctx.topology
    names = [endpoint(ctx), topo.vip, *(n.ip for n in topo.load_balancers), *(n.ip for n in topo.masters)]
    return list(dict.fromkeys(str(n) for n in names if n))


def cluster_nodes(ctx: StageContext) -> list[Node]:
    """Masters then workers: the nodes Kubernetes runs on (load balancers are not members)."""
    return [*ctx.topology.masters, *ctx.topology.workers]


def control_plane_taint_needed(ctx: StageContext) -> bool:
    """Masters keep the control-plane NoSchedule taint only when workers exist to run workloads."""
    return bool(ctx.topology.workers)


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        """Kubitect's `key[=value]:Effect` string (validated by the config) as its parts."""
        head, _, effect = text.rpartition(":")
        key, _, value = head.partition("=")
        return cls(key, value, effect)

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


CONTROL_PLANE_TAINT = Taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")


def node_taints(ctx: StageContext, node: Node) -> list[Taint]:
    """The node's taints from the merged config, plus the control-plane taint when workers exist."""
    taints = [Taint.parse(t) for t in node.taints]
    if node.role == "master" and control_plane_taint_needed(ctx) and CONTROL_PLANE_TAINT not in taints:
        taints.insert(0, CONTROL_PLANE_TAINT)
    return taints


_KUBELET_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
_KUBELET_ALLOWED_KEYS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
}


def kubelet_may_set(label: str) -> bool:
    """Whether a kubelet may self-register this label (the NodeRestriction admission rules).

    Labels in the kubernetes.io / k8s.io namespaces (e.g. node-role.kubernetes.io/worker) are
    refused when a kubelet sets them, so installers apply those with kubectl after the join.
    """
    prefix, sep, _ = label.partition("/")
    if not sep:
        return True
    if label in _KUBELET_ALLOWED_KEYS or label.startswith(_KUBELET_ALLOWED_PREFIXES):
        return True
    restricted = any(prefix == d or prefix.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))
    return not restricted


def split_labels(node: Node) -> tuple[dict[str, str], dict[str, str]]:
    """(labels the kubelet registers itself, labels set with kubectl afterwards)."""
    own = {k: str(v) for k, v in sorted(node.labels.items()) if kubelet_may_set(k)}
    later = {k: str(v) for k, v in sorted(node.labels.items()) if not kubelet_may_set(k)}
    return own, later


_POD_CANDIDATES = ("10.244.0.0/16", "10.42.0.0/16", "172.20.0.0/16", "192.168.128.0/17")
_SERVICE_CANDIDATES = ("10.96.0.0/12", "10.43.0.0/16", "172.21.0.0/16", "192.168.64.0/18")


def _free_cidr(candidates: Iterable[str], taken: list[ipaddress.IPv4Network]) -> str:
    for cand in candidates:
        net = ipaddress.ip_network(cand)
        if not any(net.overlaps(t) for t in taken):
            return cand
    raise StageError("no pod/service CIDR is free: every candidate overlaps cluster.network.cidr")


def pod_and_service_cidrs(ctx: StageContext, pod_default: str, service_default: str) -> tuple[str, str]:
    """Pod and service CIDRs that do not overlap the node network (the installer's defaults if free)."""
    node_net = ipaddress.ip_network(str(ctx.config.cluster.network.cidr), strict=False)
    pod = _free_cidr((pod_default, *_POD_CANDIDATES), [node_net])
    service = _free_cidr((service_default, *_SERVICE_CANDIDATES), [node_net, ipaddress.ip_network(pod)])
    return pod, service
