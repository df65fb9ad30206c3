"""What validation may depend on besides the file: installed installers, providers, extensions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubitect_core.config.versions import DEFAULT_MAINTAINED_FROM, DEFAULT_SUPPORTED_VERSIONS
from kubitect_core.contracts import ConfigExtension

BUILTIN_INSTALLERS = ("kubeadm", "k3s")
BUILTIN_PROVIDERS = ("libvirt", "nspawn")
BUILTIN_LOAD_BALANCERS = ("keepalived-haproxy",)
DEFAULT_MANAGER = "kubeadm"
LOCAL_PREFIX = "local-"  # Kubitect's: reserved for, and added to the names of, clusters made with --local
DEFAULT_PROVIDER = "libvirt"
# The original's default manager; Kubespray drives kubeadm underneath, so kubeadm serves it.
LEGACY_MANAGERS = {"kubespray": "kubeadm"}


@dataclass(frozen=True)
class InstallerInfo:
    """The versions one installer can install: an inclusive range and the first maintained one."""

    supported: tuple[str, str] = DEFAULT_SUPPORTED_VERSIONS
    maintained_from: str = DEFAULT_MAINTAINED_FROM

    @classmethod
    def of(cls, installer: Any) -> InstallerInfo:
        """Reads `supported_versions`/`maintained_from` off an installer plugin, else the defaults."""
        supported = getattr(installer, "supported_versions", None) or DEFAULT_SUPPORTED_VERSIONS
        maintained = getattr(installer, "maintained_from", None) or DEFAULT_MAINTAINED_FROM
        return cls(tuple(supported), maintained)  # type: ignore[arg-type]


@dataclass
class ValidationContext:
    """Installed choices the config is checked against; the engine builds it from the plugins."""

    installers: dict[str, InstallerInfo] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    load_balancers: list[str] = field(default_factory=lambda: list(BUILTIN_LOAD_BALANCERS))
    extensions: list[ConfigExtension] = field(default_factory=list)
    local: bool = False  # `--local`: the cluster name gets the "local-" prefix (LOCAL_PREFIX)


def default_context() -> ValidationContext:
    """The built-ins: kubeadm and k3s sharing the default version range, libvirt and nspawn."""
    return ValidationContext(
        installers={name: InstallerInfo() for name in BUILTIN_INSTALLERS},
        providers=list(BUILTIN_PROVIDERS),
        load_balancers=list(BUILTIN_LOAD_BALANCERS),
        extensions=[],
    )
