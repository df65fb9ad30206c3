"""Kubernetes versions: the default supported range, and which patch releases exist.

The release list is data (kubernetes_releases.json next to this module, with its date and
source), so that `v1.28.100` is refused at validate time instead of failing a download later.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

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


@dataclass(frozen=True)
class ReleaseHistory:
    """The newest patch of each minor, as of a date (see kubernetes_releases.json)."""

    as_of: str
    latest_patch: dict[tuple[int, int], int]

    def newest(self, major: int, minor: int) -> str | None:
        """`v1.28.15` for (1, 28), or None when the minor is not in the list."""
        patch = self.latest_patch.get((major, minor))
        return None if patch is None else f"v{major}.{minor}.{patch}"

    @property
    def newest_minor(self) -> tuple[int, int]:
        return max(self.latest_patch)


@cache
def release_history() -> ReleaseHistory:
    """The release list shipped with kubitect."""
    data = json.loads(resources.files(__package__).joinpath("kubernetes_releases.json").read_text("utf-8"))
    latest = {tuple(int(p) for p in minor.split(".")): int(patch) for minor, patch in data["latest_patch"].items()}
    return ReleaseHistory(as_of=data["as_of"], latest_patch=latest)  # type: ignore[arg-type]


def release_status(version: str) -> tuple[str, str | None]:
    """("released", None), ("unreleased", newest patch of its minor), or ("unknown", newest known minor).

    "unknown" is a minor newer than the list (kubitect older than the release): the caller warns.
    A minor older than the list is left to the supported-range check.
    """
    match = VERSION_RE.fullmatch(version)
    if match is None:
        return ("released", None)  # not a version at all: the format check reports it
    major, minor, patch = (int(p) for p in match.groups())
    history = release_history()
    newest = history.newest(major, minor)
    if newest is not None:
        return ("released", None) if patch <= history.latest_patch[(major, minor)] else ("unreleased", newest)
    if (major, minor) > history.newest_minor:
        return ("unknown", "v{}.{}".format(*history.newest_minor))
    return ("released", None)
