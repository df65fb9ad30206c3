"""Kubernetes versions as installers need them: parts, the per-minor series, the package spelling."""

from __future__ import annotations

from kubitect_core.config.versions import normalize, parse_version
from kubitect_core.stage import StageError


def version_tuple(version: str) -> tuple[int, int, int]:
    """`v1.34.2` -> (1, 34, 2); raises StageError for anything else (validation should prevent it)."""
    parsed = parse_version(str(version))
    if parsed is None:
        raise StageError(f"kubernetes.version '{version}' is not a version such as v1.34.2")
    return tuple(int(p) for p in parsed)  # type: ignore[return-value]


def minor_of(version: str) -> str:
    """`v1.34.2` -> `v1.34`: the upstream package repositories are per minor version."""
    major, minor, _ = version_tuple(version)
    return f"v{major}.{minor}"


def plain(version: str) -> str:
    """`v1.34.2` -> `1.34.2` (package versions carry no v)."""
    return normalize(str(version))[1:]
