"""What validation may depend on besides the file: installed installers, providers, extensions.

The choices come from the installed plugins (core names none of them): which providers, load
balancers and installers exist, which one each kind falls back to when the config names none
(`kubitect_core.defaults`), and which other manager names an installer serves.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from kubitect_core.config.versions import DEFAULT_MAINTAINED_FROM, DEFAULT_SUPPORTED_VERSIONS
from kubitect_core.contracts import ConfigExtension
from kubitect_core.defaults import DefaultChoice

LOCAL_PREFIX = "local-"  # Kubitect's: reserved for, and added to the names of, clusters made with --local
# The kinds a config may leave out, by the key of `ValidationContext.defaults`.
DEFAULT_KINDS = {"provider": "VM provider", "load_balancer": "load balancer", "installer": "Kubernetes installer"}


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
    """Installed choices the config is checked against; built from the plugins (`from_registry`)."""

    installers: dict[str, InstallerInfo] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    load_balancers: list[str] = field(default_factory=list)
    # Per load balancer: where it runs ("load_balancers" or "masters", contracts.LoadBalancer.runs_on)
    # and the port its endpoint serves the API on. Missing names: on load balancers, 6443.
    lb_runs_on: dict[str, str] = field(default_factory=dict)
    lb_ports: dict[str, int] = field(default_factory=dict)
    lb_vip_use: dict[str, str] = field(default_factory=dict)  # "optional", "required" or "unused"
    extensions: list[ConfigExtension] = field(default_factory=list)
    local: bool = False  # `--local`: the cluster name gets the "local-" prefix (LOCAL_PREFIX)
    # What a config that leaves a kind out gets: keys "provider", "load_balancer", "installer".
    defaults: dict[str, DefaultChoice] = field(default_factory=dict)
    # Other `kubernetes.manager` names an installer serves: alias -> (installer, why).
    manager_aliases: dict[str, tuple[str, str]] = field(default_factory=dict)

    def default(self, kind: str) -> DefaultChoice:
        """The default of `kind` ("provider", "load_balancer", "installer"); none claimed if unknown."""
        return self.defaults.get(kind) or DefaultChoice(DEFAULT_KINDS[kind])

    def effective_manager(self, raw_manager: Any) -> str | None:
        """The installer that serves `kubernetes.manager` as written (None: the default, if any)."""
        if raw_manager is None:
            return self.default("installer").name
        if not isinstance(raw_manager, str):
            return None
        return self.manager_aliases.get(raw_manager, (raw_manager, ""))[0]


def from_registry(registry: Any) -> ValidationContext:
    """The validation context of a plugin registry (`kubitect_core.plugins.Registry`)."""
    aliases: dict[str, tuple[str, str]] = {}
    for name, installer in registry.installers.items():
        for alias, why in dict(getattr(installer, "aliases", None) or {}).items():
            if alias not in registry.installers:  # a real installer of that name wins
                aliases.setdefault(alias, (name, why))
    return ValidationContext(
        installers={name: InstallerInfo.of(inst) for name, inst in registry.installers.items()},
        providers=sorted(registry.providers),
        load_balancers=sorted(registry.load_balancers),
        lb_runs_on={name: str(getattr(lb, "runs_on", "load_balancers"))
                    for name, lb in registry.load_balancers.items()},
        lb_ports={name: int(getattr(lb, "api_port", 6443)) for name, lb in registry.load_balancers.items()},
        lb_vip_use={name: str(getattr(lb, "vip_use", "optional")) for name, lb in registry.load_balancers.items()},
        extensions=list(registry.extensions),
        defaults=dict(registry.defaults),
        manager_aliases=aliases,
    )


_cache: dict[tuple[str, str], ValidationContext] = {}
_cache_lock = threading.Lock()


def default_context() -> ValidationContext:
    """What the installed plugins accept: the context of a registry loaded once per process.

    Used wherever a config is read without a context at hand (tests, `load_config(path)`). The
    plugin set depends on KUBITECT_PLUGINS / KUBITECT_DISABLE_PLUGINS, so they key the cache.
    When the plugins cannot be loaded at all (two claim one stage name), the context is empty:
    every choice the config makes is then reported as not installed.
    """
    return copy.deepcopy(_cached())


def _cache_key() -> tuple[str, str]:
    return os.environ.get("KUBITECT_PLUGINS", ""), os.environ.get("KUBITECT_DISABLE_PLUGINS", "")


def _cached() -> ValidationContext:
    """The process's context (shared: callers must not change it; `default_context` copies)."""
    key = _cache_key()
    with _cache_lock:
        if key not in _cache:
            from kubitect_core.plugins import load_registry

            try:
                _cache[key] = from_registry(load_registry())
            except RuntimeError:
                _cache[key] = ValidationContext()
        return _cache[key]


def remember(context: ValidationContext) -> ValidationContext:
    """Keeps a context just built from the installed plugins as the process's `default_context`.

    A command that loaded the registry itself (`validate`) passes its context here, so that a later
    `default_context()` in the same process (the summary's API port) does not load every plugin a
    second time. Same plugin set, same key: what `default_context` would have built.
    """
    with _cache_lock:
        _cache.setdefault(_cache_key(), copy.deepcopy(context))
    return context


def api_port(implementation: str | None) -> int:
    """The port the named load balancer serves the API on (its `api_port`; 6443 when unknown)."""
    return _cached().lb_ports.get(implementation or "", 6443)
