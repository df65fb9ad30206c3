"""The lab harness: isolated network namespaces (optionally with libvirtd inside) for tests and demos.

Everything networked a lab does stays inside its namespace; `down` removes it again, also
after a crashed run. See `Lab` (Python) and `kubitect lab` (CLI).
"""

from kubitect_core.lab.harness import (
    DEFAULT_PREFIX,
    MARKER_ENV,
    Lab,
    LabStatus,
    lab_down,
    lab_down_all,
    lab_status,
    lab_up,
)

__all__ = [
    "DEFAULT_PREFIX", "MARKER_ENV", "Lab", "LabStatus", "lab_down", "lab_down_all", "lab_status",
    "lab_up",
]
