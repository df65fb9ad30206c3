"""SDK: what every Kubernetes installer plugin needs, whatever tool it drives.

    from kubitect_core.sdk import kube

    kube.api_url(ctx)                    # https://<endpoint>:<port>, as the load balancer recorded them
    kube.endpoint_address(ctx)           # <endpoint>:<port> (kubeadm's controlPlaneEndpoint)
    kube.api_port(ctx)                   # the endpoint's port (8443 with control-plane-vip, else 6443)
    kube.API_SERVER_PORT                 # the port each API server itself binds (6443)
    kube.cert_sans(ctx)                  # names the API certificate must carry (endpoint, VIP, LBs, masters)
    kube.load_or_create_secrets(...)     # 0600 secrets, generated once, never logged
    kube.download_reason(ctx, urls)      # None, or why the sources cannot be reached from here
    await kube.install_cni(...)          # the configured CNI at its pinned version
    kube.kubeconfig_change(ctx, text)    # store (and merge) the fetched admin kubeconfig
    await kube.drain(kubectl, "w-1", 300)  # node lifecycle: cordon, uncordon, drain, delete_node,
                                         # wait_node_ready, through any `Kubectl` runner
    await kube.upgrade(ctx, pool, first, driver, target, remote)
                                         # a rolling upgrade: preflight, lock, snapshot, nodes in order

Implemented in `kubitect_core.kube`; this module is the stable surface plugins import.
"""

from kubitect_core.kube.admin_kubeconfig import (
    drop_kubeconfig,
    finish_kubeconfig,
    kubeconfig_change,
    kubeconfig_plan,
)
from kubitect_core.kube.cluster import (
    API_PORT,
    API_SERVER_PORT,
    CONTROL_PLANE_TAINT,
    Taint,
    api_port,
    api_url,
    cert_sans,
    cluster_nodes,
    control_plane_taint_needed,
    endpoint,
    endpoint_address,
    kubelet_may_set,
    node_taints,
    pod_and_service_cidrs,
    split_labels,
)
from kubitect_core.kube.cni import CNIS, Cni
from kubitect_core.kube.credentials import (
    SECRETS_DIR,
    bootstrap_token,
    certificate_key,
    load_or_create_secrets,
    random_token,
    secrets_dir,
)
from kubitect_core.kube.node_ops import (
    Kubectl,
    NodeNotFound,
    NodeOpError,
    NodeState,
    RemoteKubectl,
    blocking_pods,
    check_node_name,
    cordon,
    delete_node,
    drain,
    is_not_found,
    node_state,
    uncordon,
    wait_node_ready,
)
from kubitect_core.kube.readiness import ready_nodes, ready_then_fetch, wait_ready
from kubitect_core.kube.removal import DRAIN_TIMEOUT, drain_timeout, removal_plan, remove_members
from kubitect_core.kube.sources import (
    PROBE_TIMEOUT,
    SOURCE_PREINSTALLED,
    SOURCE_UPSTREAM,
    SOURCES,
    download_reason,
    node_unreachable_reason,
    probe_timeout,
    probe_url,
    ready_timeout,
    source,
    unreachable_reason,
)
from kubitect_core.kube.steps import (
    apply_restricted_labels,
    first_master,
    forget_installation,
    install_cni,
    node_pool,
    remove_from_nodes,
)
from kubitect_core.kube.upgrade import (
    UpgradeDriver,
    latest_release,
    stacked_etcd_snapshot,
    upgrade,
    upgrade_pending,
)
from kubitect_core.kube.versions import minor_of, plain, version_tuple

__all__ = [
    "API_PORT", "API_SERVER_PORT", "CNIS", "CONTROL_PLANE_TAINT", "PROBE_TIMEOUT", "SECRETS_DIR", "SOURCES",
    "SOURCE_PREINSTALLED",
    "SOURCE_UPSTREAM", "Cni", "Taint", "api_port", "api_url", "apply_restricted_labels", "bootstrap_token", "cert_sans",
    "certificate_key", "cluster_nodes", "control_plane_taint_needed", "download_reason", "drop_kubeconfig",
    "endpoint", "endpoint_address", "finish_kubeconfig", "first_master", "forget_installation", "install_cni",
    "kubeconfig_change",
    "kubeconfig_plan", "kubelet_may_set", "load_or_create_secrets", "minor_of", "node_pool", "node_taints",
    "node_unreachable_reason", "plain", "pod_and_service_cidrs", "probe_timeout", "probe_url", "random_token",
    "ready_nodes", "ready_then_fetch", "ready_timeout", "remove_from_nodes", "secrets_dir", "source",
    "split_labels", "unreachable_reason", "version_tuple", "wait_ready",
    # node lifecycle (kubitect_core.kube.node_ops)
    "Kubectl", "NodeNotFound", "NodeOpError", "NodeState", "RemoteKubectl", "blocking_pods", "check_node_name",
    "cordon", "delete_node", "drain", "is_not_found", "node_state", "uncordon", "wait_node_ready",
    # scale-in (kubitect_core.kube.removal)
    "DRAIN_TIMEOUT", "drain_timeout", "removal_plan", "remove_members",
    # rolling upgrades (kubitect_core.kube.upgrade)
    "UpgradeDriver", "latest_release", "stacked_etcd_snapshot", "upgrade", "upgrade_pending",
]
