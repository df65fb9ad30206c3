"""What the engine asks the user before it changes or deletes something, and what would be lost.

The engine never prompts by itself: it hands a `Confirmation` to the `confirm` callback of
whoever drives it (the CLI prompts on a terminal; a program decides in code). A confirmation is
*destructive* when data would be lost (a cluster destroyed, a node or a data disk deleted or
recreated, a pool removed). The CLI then follows Terraform: without a terminal to ask on, a
destructive change goes ahead only with `-y/--auto-approve`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubitect_core.changes import ChangeEvent

ROLE_OF = {"master": "master", "worker": "worker", "loadBalancer": "lb"}
_NODE = re.compile(r"cluster\.nodes\.(master|worker|loadBalancer)\.instances\[([^\]]+)\]")
_DISK = re.compile(_NODE.pattern + r"\.dataDisks\[([^\]]+)\]")
_POOL = re.compile(r"hosts\[([^\]]+)\]\.dataResourcePools\[([^\]]+)\]")
_MAIN_POOL = re.compile(r"hosts\[([^\]]+)\]\.mainResourcePoolPath")
_HOST = re.compile(r"hosts\[([^\]]+)\]")
DELETE_DATA_DISKS = "--delete-data-disks"


@dataclass
class Confirmation:
    """A question for the user, with the changes it is about and the data each would lose."""

    question: str
    events: Sequence[ChangeEvent] = ()
    data_loss: list[str] = field(default_factory=list)
    # A flag that alone may answer yes (e.g. --delete-data-disks): -y/--auto-approve does not.
    explicit: str | None = None

    @property
    def destructive(self) -> bool:
        return bool(self.data_loss)


def data_loss(events: Sequence[ChangeEvent], cluster: str) -> list[str]:
    """One line per node, disk, pool or host whose data the changes would delete.

    Why from the events: they are matched by identity (instance id, disk and pool name), so a
    removed node is told apart from a node whose other fields changed.
    """
    lines: dict[str, str] = {}
    for e in events:
        if e.severity == "error":
            continue
        path = e.path
        if m := _DISK.match(path):  # the disk itself, or one of its fields
            whole = m.end() == len(path)
            if whole and e.kind == "create":
                continue
            node = f"{cluster}-{ROLE_OF[m.group(1)]}-{m.group(2)}"
            verb = "deleted" if whole and e.kind == "delete" else "recreated"
            lines.setdefault(f"disk {node}/{m.group(3)}",
                             f"data disk '{m.group(3)}' of node {node} will be {verb}: the data on it is lost")
        elif (m := _NODE.fullmatch(path)) and e.kind == "delete":
            node = f"{cluster}-{ROLE_OF[m.group(1)]}-{m.group(2)}"
            lines.setdefault(f"node {node}", f"node {node} will be deleted, with its disks and the data on them")
        elif m := _POOL.match(path):
            whole = m.end() == len(path)
            if whole and e.kind == "create":
                continue
            verb = "deleted" if whole and e.kind == "delete" else "recreated"
            lines.setdefault(f"pool {m.group(1)}/{m.group(2)}",
                             f"data resource pool '{m.group(2)}' on host {m.group(1)} will be {verb}, with every "
                             "disk in it: their data is lost")
        elif m := _MAIN_POOL.fullmatch(path):
            lines.setdefault(f"main {m.group(1)}",
                             f"the main resource pool on host {m.group(1)} moves: every node disk in it is "
                             "recreated and its data lost")
        elif (m := _HOST.fullmatch(path)) and e.kind == "delete":
            lines.setdefault(f"host {m.group(1)}",
                             f"host {m.group(1)} is removed: every kubitect VM and disk on it is deleted")
    return list(lines.values())


def destroy_loss(cluster: str, nodes: Sequence[str] = ()) -> list[str]:
    """The data-loss lines of `destroy`: the whole cluster, and each node when they are known."""
    out = [f"node {n} will be deleted, with its disks and the data on them" for n in nodes]
    out.append(f"cluster '{cluster}' will be destroyed: every VM, disk, network and file kubitect made "
               "for it, its SSH key and kubeconfig")
    return out
