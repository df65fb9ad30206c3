"""Which installed implementation serves a config that names none.

Core names no built-in plugin. Kubitect's users still expect an omitted `hosts[].provider` to
mean libvirt, an omitted `kubernetes.manager` kubeadm, and the load balancer keepalived-haproxy:
each of those plugins declares itself the default (`default = True` on the object it offers), and
the registry picks, per kind, the one implementation that does. Two claimants, or none, leave no
default: a config that relies on it then fails validation naming the claimants and the choices,
while a config that names its implementation still works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DefaultChoice:
    """The default implementation of one kind, or why there is none."""

    kind: str  # "VM provider", "load balancer", "Kubernetes installer"
    claimants: tuple[str, ...] = ()  # installed implementations that declare `default = True`

    @property
    def name(self) -> str | None:
        """The default, when exactly one installed implementation claims it."""
        return self.claimants[0] if len(self.claimants) == 1 else None

    @property
    def problem(self) -> str | None:
        """Why there is no default, in words for a validation message; None when there is one."""
        if len(self.claimants) > 1:
            names = ", ".join(f"'{c}'" for c in self.claimants)
            return f"the installed plugins disagree on the default {self.kind}: {names} each claim it"
        if not self.claimants:
            return f"no installed plugin declares itself the default {self.kind}"
        return None


def choose(kind: str, offered: Mapping[str, Any]) -> DefaultChoice:
    """The default among `offered` ({name: implementation}): those whose `default` is True."""
    return DefaultChoice(kind, tuple(sorted(name for name, obj in offered.items()
                                            if getattr(obj, "default", False) is True)))
