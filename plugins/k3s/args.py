"""The k3s command lines and release URLs for one cluster (pure: golden-tested).

Every server names the VIP, every load balancer and every master in `--tls-san`; the first
server starts the embedded etcd with `--cluster-init`; every other server and every agent joins
through the control-plane endpoint (`--server https://<endpoint>:<port>`,
the port the load balancer recorded). The token is never an
argument: it reaches k3s through a 0600 environment file (K3S_TOKEN).
"""

from __future__ import annotations

import re
import urllib.parse

from kubitect_core.sdk import Node, StageContext, StageError, normalize_version, templates
from kubitect_core.sdk.kube import api_url, cert_sans, node_taints, pod_and_service_cidrs, split_labels

SUPPORTED_VERSIONS = ("1.28.0", "1.35.99")
MAINTAINED_FROM = "1.33.0"
RELEASE_BASE = "https://github.com/k3s-io/k3s/releases/download"
K3S_SUFFIX = "+k3s1"
POD_CIDR_DEFAULT = "10.42.0.0/16"  # k3s's own defaults, used whenever they do not overlap the nodes
SERVICE_CIDR_DEFAULT = "10.43.0.0/16"
_SAFE_ARG = re.compile(r"[A-Za-z0-9._/:=,+@-]+")



def k3s_version(ctx_or_version) -> str:
    """`v1.34.2+k3s1`, always with the leading v (the original dropped it: Kubitect bug 11)."""
    version = ctx_or_version if isinstance(ctx_or_version, str) else str(ctx_or_version.config.kubernetes.version)
    return normalize_version(version) + K3S_SUFFIX


def binary_url(version: str, arch: str = "amd64") -> str:
    """The release binary (`k3s` for amd64, `k3s-arm64` ...); `+` is escaped as GitHub expects."""
    name = "k3s" if arch == "amd64" else f"k3s-{arch}"
    return f"{RELEASE_BASE}/{urllib.parse.quote(version, safe='')}/{name}"


def checksum_url(version: str, arch: str = "amd64") -> str:
    return f"{RELEASE_BASE}/{urllib.parse.quote(version, safe='')}/sha256sum-{arch}.txt"


def uses_flannel(ctx: StageContext) -> bool:
    """k3s keeps its built-in flannel unless the config explicitly chose another CNI.

    Why "explicitly": the config model defaults networkPlugin to calico (Kubitect's kubespray
    default), but the original's k3s always used flannel; a config that never named a plugin
    keeps that behaviour.
    """
    k8s = ctx.config.kubernetes
    explicit = "network_plugin" in getattr(k8s, "model_fields_set", {"network_plugin"})
    return not explicit or k8s.network_plugin == "flannel"


def _node_args(ctx: StageContext, node: Node) -> list[str]:
    args = [f"--node-name={node.name}"]
    if node.ip:
        args.append(f"--node-ip={node.ip}")
    own, _ = split_labels(node)
    args += [f"--node-label={k}={v}" for k, v in own.items()]
    args += [f"--node-taint={t}" for t in node_taints(ctx, node)]
    return args


def server_args(ctx: StageContext, node: Node, *, first: bool) -> list[str]:
    """`k3s server ...` for a master: `--cluster-init` on the first, `--server <endpoint>` on others."""
    pod, service = pod_and_service_cidrs(ctx, POD_CIDR_DEFAULT, SERVICE_CIDR_DEFAULT)
    args = ["server", "--cluster-init"] if first else ["server", f"--server={api_url(ctx)}"]
    args += [f"--tls-san={san}" for san in cert_sans(ctx)]
    args += [f"--cluster-cidr={pod}", f"--service-cidr={service}", "--write-kubeconfig-mode=0600"]
    if not uses_flannel(ctx):
        args += ["--flannel-backend=none", "--disable-network-policy"]
    return _checked(args + _node_args(ctx, node))


def agent_args(ctx: StageContext, node: Node) -> list[str]:
    """`k3s agent --server https://<endpoint>:<port> ...` for a worker."""
    return _checked(["agent", f"--server={api_url(ctx)}", *_node_args(ctx, node)])


def args_for(ctx: StageContext, node: Node) -> list[str]:
    """The command line of any cluster node (the first master is the cluster-init server)."""
    if node.role == "master":
        return server_args(ctx, node, first=node == ctx.topology.masters[0])
    return agent_args(ctx, node)


def _checked(args: list[str]) -> list[str]:
    for arg in args:
        if not _SAFE_ARG.fullmatch(arg):
            raise StageError(f"k3s argument {arg!r} contains characters a systemd unit cannot carry safely")
    return args


def unit_name(node: Node) -> str:
    return "k3s" if node.role == "master" else "k3s-agent"


def env_file(node: Node) -> str:
    return f"/etc/systemd/system/{unit_name(node)}.service.env"


def render_unit(ctx: StageContext, node: Node, binary: str) -> str:
    """The node's systemd unit (k3s.service or k3s-agent.service)."""
    return templates(__file__).get_template("k3s.service.j2").render(
        cluster=ctx.cluster, node=node.name, role="server" if node.role == "master" else "agent",
        env_file=env_file(node), binary=binary, args=args_for(ctx, node),
    )
