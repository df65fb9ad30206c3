"""Kubernetes version ranges: one default range, kept here, until installers declare their own."""

from __future__ import annotations

import math

from kubitect_core.config.fieldtypes import VERSION_RE

# The one place the default supported range lives (installers may declare their own).
DEFAULT_SUPPORTED_VERSIONS: tuple[str, str] = ("1.28.0", "1.35.x")
# Versions below this are end of life upstream: installable, accepted with a warning.
DEFAULT_MAINTAINED_FROM = "1.33.0"
# What `kubernetes.version` resolves to when the config names none.
DEFAULT_KUBERNETES_VERSION = "v1.34.2"


def parse_version(text: str, *, upper: bool = False) -> tuple[float, float, float] | None:
    """`v1.28.6` / `1.28.6` -> (1, 28, 6); `x` or `*` parts are wildcards (inf for an upper bound).

    Returns None for anything else, so callers can report the value instead of crashing.
    """
    if not isinstance(text, str):
        return None
    match = VERSION_RE.fullmatch(text)
    if match:
        return tuple(float(p) for p in match.groups())  # type: ignore[return-value]
    parts = text.removeprefix("v").split(".")
    if len(parts) != 3 or not all(p.isdigit() or p in ("x", "*") for p in parts):
        return None
    wild = math.inf if upper else 0.0
    return tuple(float(p) if p.isdigit() else wild for p in parts)  # type: ignore[return-value]


def normalize(text: str) -> str:
    """`1.28.6` -> `v1.28.6` (the leading v is optional in the file)."""
    return text if text.startswith("v") else f"v{text}"


def classify(version: str, supported: tuple[str, str], maintained_from: str) -> str:
    """"ok", "eol" (installable but past upstream support), "unsupported" or "invalid"."""
    value = parse_version(version)
    lo, hi = parse_version(supported[0]), parse_version(supported[1], upper=True)
    if value is None or lo is None or hi is None:
        return "invalid"
    if not lo <= value <= hi:
        return "unsupported"
    maintained = parse_version(maintained_from)
    if maintained is not None and value < maintained:
        return "eol"
    return "ok"


def describe_range(supported: tuple[str, str]) -> str:
    """`v1.28.0 - v1.35.x`, for messages."""
    return f"{normalize(supported[0])} - {normalize(supported[1])}"
