"""Where kubeadm's Kubernetes comes from: version range, per-minor package repositories, config API.

Every URL and pinned version of the kubeadm installer lives in this one module; the pinned CNI
manifests both installers apply are in the SDK (`kubitect_core.sdk.kube.CNIS`).
"""

from __future__ import annotations

from kubitect_core.sdk.kube import minor_of, version_tuple

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
