"""The CNI plugins kubitect installs (`kubernetes.networkPlugin`), each pinned to one version.

Shared by every installer: kubeadm applies one of them, k3s too unless it keeps its own flannel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cni:
    """One CNI at a pinned version and how to install it with a cluster-admin kubectl."""

    name: str
    version: str
    manifest: str | None = None  # applied with `kubectl apply -f`
    cli_url: str | None = None  # a CLI that installs it (cilium), run on the first control plane

    def commands(self, kubectl: str, kubeconfig: str, pod_cidr: str) -> list[str]:
        """Shell commands (run with sudo on the first control plane) that install this CNI."""
        if self.manifest:
            return [f"{kubectl} apply -f {self.manifest}"]
        return [
            f"curl -fsSL --retry 3 {self.cli_url} | tar -xz -C /usr/local/bin cilium",
            f"KUBECONFIG={kubeconfig} cilium install --version {self.version} "
            f"--set ipam.operator.clusterPoolIPv4PodCIDRList={pod_cidr}",
        ]


CNIS: dict[str, Cni] = {
    "calico": Cni("calico", "v3.29.1",
                  manifest="https://raw.githubusercontent.com/projectcalico/calico/v3.29.1/manifests/calico.yaml"),
    "cilium": Cni("cilium", "1.16.5",
                  cli_url="https://github.com/cilium/cilium-cli/releases/download/v0.16.22/"
                          "cilium-linux-amd64.tar.gz"),
    "flannel": Cni("flannel", "v0.26.1",
                   manifest="https://github.com/flannel-io/flannel/releases/download/v0.26.1/kube-flannel.yml"),
    "kube-router": Cni("kube-router", "v2.4.1",
                       manifest="https://raw.githubusercontent.com/cloudnativelabs/kube-router/v2.4.1/daemonset/"
                                "kubeadm-kuberouter.yaml"),
}
