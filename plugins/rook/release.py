"""The Rook releases kubitect installs: each pinned with its Ceph image and the sha256 of every
upstream manifest it applies.

Why pinned: Kubitect installed the newest Helm chart at apply time with only the image tag set by
`addons.rook.version`, so chart and image could disagree and an upgrade could jump Rook silently
(reference/day2-and-fast-failover.md §4). Here a version is a closed set: operator image, Ceph
image and manifests, fetched from the release tag and refused when a checksum differs.

Source of the facts: github.com/rook/rook, tag v1.20.6 (commit 4e1b7a626891a215949ab42a6957a0ef1e1a25e6),
files deploy/examples/{crds,common,operator,toolbox}.yaml; sha256 computed from that tree;
operator.yaml's image is docker.io/rook/ceph:v1.20.6 and the example cluster.yaml's Ceph image
is quay.io/ceph/ceph:v20.2.4.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_URL = "https://raw.githubusercontent.com/rook/rook/{tag}/deploy/examples/{file}"


@dataclass(frozen=True)
class Release:
    version: str  # the Rook tag, e.g. v1.20.6 (what addons.rook.version names)
    commit: str  # the tag's commit, for the record
    ceph_image: str  # the Ceph the CephCluster and the toolbox run
    operator_image: str  # what operator.yaml deploys (checked in the downloaded file)
    files: tuple[tuple[str, str], ...]  # (file under deploy/examples, sha256), in apply order

    def url(self, file: str) -> str:
        return RAW_URL.format(tag=self.version, file=file)


RELEASES = {
    "v1.20.6": Release(
        version="v1.20.6",
        commit="4e1b7a626891a215949ab42a6957a0ef1e1a25e6",
        ceph_image="quay.io/ceph/ceph:v20.2.4",
        operator_image="docker.io/rook/ceph:v1.20.6",
        files=(
            ("crds.yaml", "7fa7462d44b35d636703a03a88120030692a06a05ac91ec253200cb4ae8c37cf"),
            ("common.yaml", "2d59b3093446dcf7dd69c73ebaef2d41e8cdfd14af564c2e885d49ab8d190457"),
            ("operator.yaml", "c69bb7309b6dfc34a1eeab658a1f9c825c7d156fb26dc1a6a824f6a9735761a4"),
            ("toolbox.yaml", "f0e7581f8eee656b0815e0aa93a93ef851811b4e2da7bb28a8e070e52062c6f3"),
        ),
    ),
}
DEFAULT_VERSION = "v1.20.6"


class UnknownRelease(ValueError):
    """addons.rook.version names a release kubitect has no pinned manifests for."""


def release_for(version: str | None, releases: dict[str, Release] | None = None) -> Release:
    """The pinned release for `addons.rook.version` (the default when unset)."""
    releases = RELEASES if releases is None else releases
    wanted = version or DEFAULT_VERSION
    if wanted not in releases:
        raise UnknownRelease(f"addons.rook.version {wanted} has no pinned manifests in this kubitect; "
                             f"supported: {', '.join(sorted(releases))} (unset means {DEFAULT_VERSION})")
    return releases[wanted]
