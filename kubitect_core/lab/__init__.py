"""The lab harness: isolated network namespaces (optionally with libvirtd inside) for tests and demos.

Everything networked a lab does stays inside its namespace; `down` removes it again, also
after a crashed run. See `Lab` (Python) and `kubitect lab` (CLI).
"""

from typing import Any

# The harness (and what it imports) loads on first use: the nspawn plugin reaches
# kubitect_core.lab.netns through the SDK on every start-up, and must not pay for the harness.
_HARNESS_NAMES = ("DEFAULT_PREFIX", "MARKER_ENV", "Lab", "LabStatus", "lab_down", "lab_down_all", "lab_status",
                  "lab_up")


def __getattr__(name: str) -> Any:
    if name in _HARNESS_NAMES:
        from kubitect_core.lab import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PREFIX", "MARKER_ENV", "Lab", "LabStatus", "lab_down", "lab_down_all", "lab_status",
    "lab_up",
]
