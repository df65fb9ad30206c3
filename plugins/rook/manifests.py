"""The upstream manifests of a pinned release: downloaded once into the kubitect cache, verified.

Every read, from the cache or the network, is checked against the pinned sha256, so a tampered
cache or a moved tag is refused with both digests named instead of being applied.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .release import Release

TOOLBOX_UPSTREAM_IMAGE = "quay.io/ceph/ceph:v20"  # toolbox.yaml names a floating tag: pinned below

Fetch = Callable[[str], bytes]


class ManifestError(RuntimeError):
    """A pinned manifest could not be fetched or does not match its checksum."""


def download(url: str, timeout: float = 60) -> bytes:
    """The real fetch (HTTPS, bounded size: the largest file, crds.yaml, is about 1 MB)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (a fixed https URL)
        return resp.read(16 << 20)


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def cache_dir(home: Path, release: Release) -> Path:
    return Path(home) / "cache" / "rook" / release.version


def upstream(release: Release, home: Path, fetch: Fetch = download) -> dict[str, str]:
    """{file: text} of the release's upstream manifests, verified; fetched when not cached."""
    out = {}
    folder = cache_dir(home, release)
    for name, want in release.files:
        path = folder / name
        data = path.read_bytes() if path.exists() else None
        if data is None:
            url = release.url(name)
            try:
                data = fetch(url)
            except OSError as exc:
                raise ManifestError(f"cannot download Rook {release.version} {name} from {url}: {exc}") from exc
        got = sha256(data)
        if got != want:
            path.unlink(missing_ok=True)
            raise ManifestError(f"Rook {release.version} {name}: sha256 {got} does not match the pinned {want}; "
                                "refusing to apply it (the cached copy, if any, was removed)")
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        out[name] = data.decode()
    if release.operator_image not in out.get("operator.yaml", release.operator_image):
        raise ManifestError(f"Rook {release.version} operator.yaml does not deploy {release.operator_image}")
    if "toolbox.yaml" in out:
        out["toolbox.yaml"] = out["toolbox.yaml"].replace(TOOLBOX_UPSTREAM_IMAGE + "\n", release.ceph_image + "\n")
    return out
