"""Renders the kubeadm init and join configurations (jinja2 templates next to this module).

Every rendered document is validated against the strict upstream API models (`api.py`)
before it leaves this module, so a template mistake never reaches a node.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubitect_core.sdk import Node, StageContext, lazy_import, normalize_version, templates
from kubitect_core.sdk.kube import (
    API_SERVER_PORT,
    cert_sans,
    endpoint_address,
    node_taints,
    pod_and_service_cidrs,
    split_labels,
)

from . import sources

# The strict upstream API models (pydantic, many classes) are built when a document is first checked.
api = lazy_import(f"{__package__}.api")

POD_CIDR_DEFAULT = "10.244.0.0/16"  # flannel's manifest assumes it; calico reads it from kubeadm
SERVICE_CIDR_DEFAULT = "10.96.0.0/12"


@dataclass(frozen=True)
class KubeadmSecrets:
    """The bootstrap token and certificate key (kept 0600 in the cluster dir; never logged)."""

    token: str
    certificate_key: str

    def __repr__(self) -> str:  # never print a secret by accident
        return "KubeadmSecrets(<hidden>)"


def version(ctx: StageContext) -> str:
    return normalize_version(str(ctx.config.kubernetes.version))


def kubelet_args(node: Node) -> dict[str, str]:
    """Extra kubelet flags: the node IP and the labels a kubelet may register itself."""
    args = {"node-ip": str(node.ip)} if node.ip else {}
    own, _ = split_labels(node)
    if own:
        args["node-labels"] = ",".join(f"{k}={v}" for k, v in own.items())
    return args


def _common(ctx: StageContext, node: Node, secrets: KubeadmSecrets) -> dict:
    api_version = sources.kubeadm_api_version(version(ctx))
    return {
        "cluster": ctx.cluster,
        "node": node,
        "api_version": api_version,
        "beta4": api_version == api.V1BETA4,
        "token": secrets.token,
        "certificate_key": secrets.certificate_key,
        # The API server binds its own port; clients and joins go through the load balancer's
        # endpoint and port (8443 when HAProxy shares the masters, control-plane-vip).
        "port": API_SERVER_PORT,
        "control_plane_endpoint": endpoint_address(ctx),
        "taints": node_taints(ctx, node),
        "kubelet_args": kubelet_args(node),
    }


def render_init(ctx: StageContext, node: Node, secrets: KubeadmSecrets) -> str:
    """The `kubeadm init --config` file for the first control plane (Init + Cluster + Kubelet)."""
    pod, service = pod_and_service_cidrs(ctx, POD_CIDR_DEFAULT, SERVICE_CIDR_DEFAULT)
    text = templates(__file__).get_template("kubeadm-init.yaml.j2").render(
        **_common(ctx, node, secrets), version=version(ctx), cert_sans=cert_sans(ctx),
        pod_cidr=pod, service_cidr=service,
    )
    api.validate_documents(text)
    return text


def render_join(ctx: StageContext, node: Node, secrets: KubeadmSecrets, ca_cert_hash: str) -> str:
    """The `kubeadm join --config` file: a control plane (with the certificate key) or a worker."""
    control_plane = node.role == "master"
    values = _common(ctx, node, secrets)
    if not control_plane:
        values["certificate_key"] = ""  # a worker never needs it: keep it off the node
    text = templates(__file__).get_template("kubeadm-join.yaml.j2").render(
        **values, control_plane=control_plane, ca_cert_hash=ca_cert_hash,
    )
    api.validate_documents(text)
    return text
