"""Where Kubernetes comes from: version range, per-minor package repositories, pinned CNI manifests.

Every URL and pinned version of the kubeadm installer lives in this one module (the k3s
installer reuses the CNI table for the non-flannel plugins).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubitect_core.kube.steps import minor_of, version_tuple

SUPPORTED_VERSIONS = ("1.28.0", "1.35.99")
# Upstream supports the three newest minors; older ones install fine but get no fixes.
MAINTAINED_FROM = "1.33.0"

PKGS_BASE = "https://pkgs.k8s.io/core:/stable:"


def kubeadm_api_version(version: str) -> str:
    """The kubeadm config API to render for `version`.

    v1beta4 exists from kubeadm 1.31 on and is the preferred format there; v1beta3 is deprecated
    from 1.31 and scheduled for removal ("1.34 or later"), so it is used only where v1beta4 does
    not exist yet (1.28 - 1.30).
    """
    _, minor, _ = version_tuple(version)
    return "kubeadm.k8s.io/v1beta4" if minor >= 31 else "kubeadm.k8s.io/v1beta3"


def apt_repo(version: str) -> str:
    """The per-minor Debian repository on pkgs.k8s.io (`.../v1.34/deb/`)."""
    return f"{PKGS_BASE}/{minor_of(version)}/deb/"


def rpm_repo(version: str) -> str:
    """The per-minor RPM repository on pkgs.k8s.io (`.../v1.34/rpm/`)."""
    return f"{PKGS_BASE}/{minor_of(version)}/rpm/"


def probe_urls(version: str) -> list[str]:
    """What must be reachable for an upstream install: the repository's signing key."""
    return [f"{apt_repo(version)}Release.key"]


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
