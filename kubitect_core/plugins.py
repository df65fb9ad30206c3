"""Loads plugins (built-in and third-party alike) and collects what they provide.

Built-ins are not special: they are found through the `kubitect` entry-point group like any
third party's package. Two environment variables exist for tests and for users who want to try a
plugin without packaging it: `KUBITECT_PLUGINS` (comma-separated importable modules to register
as extra plugins) and `KUBITECT_DISABLE_PLUGINS` (comma-separated entry-point names to skip).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from kubitect_core import hookspecs
from kubitect_core.stage import Stage, order_stages

ENTRY_POINT_GROUP = "kubitect"
BUILTIN_ORDER = ("validate", "network", "storage", "vms", "loadbalancers", "kubernetes", "verify")


@dataclass
class PluginInfo:
    name: str
    source: str  # "entry point <dist> <version>" or "module" (KUBITECT_PLUGINS)
    provides: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Registry:
    """Everything the installed plugins offer, by name."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    stages: list[Stage]
    providers: dict[str, Any]
    load_balancers: dict[str, Any]
    installers: dict[str, Any]
    extensions: list[Any]

    @property
    def load_errors(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def conformance_modules(self) -> list[str]:
        return [m for mods in self.pm.hook.kubitect_conformance_modules() for m in (mods or [])]


def _csv_env(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def _merge(results: list[dict[str, Any]] | None, kind: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for result in results or []:
        for name, obj in (result or {}).items():
            if name in merged:
                raise RuntimeError(f"two plugins provide the {kind} '{name}'; disable one with "
                                   f"KUBITECT_DISABLE_PLUGINS")
            merged[name] = obj
    return merged


def load_registry(extra_plugins: list[Any] | None = None) -> Registry:
    """Builds the plugin manager and asks every plugin what it provides.

    A plugin that fails to import is reported by name (in `Registry.plugins` with its error)
    instead of crashing every command; `check_pending()` turns a misspelt hook into an error.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    disabled = set(_csv_env("KUBITECT_DISABLE_PLUGINS"))
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in disabled:
            continue
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        info = PluginInfo(ep.name, f"entry point of {dist}")
        infos.append(info)
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take the CLI down
            info.error = f"{type(exc).__name__}: {exc}"
    for module_name in _csv_env("KUBITECT_PLUGINS"):
        info = PluginInfo(module_name, "module (KUBITECT_PLUGINS)")
        infos.append(info)
        try:
            pm.register(importlib.import_module(module_name), name=module_name)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
    for i, plugin in enumerate(extra_plugins or []):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        infos.append(PluginInfo(name, "registered in-process"))
        pm.register(plugin, name=name)
    pm.check_pending()

    stages: list[Stage] = []
    for result in pm.hook.kubitect_register_stages():
        stages.extend(result or [])
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"more than one plugin registers the stage(s) {sorted(dupes)}")
    registry = Registry(
        pm=pm,
        plugins=infos,
        stages=order_stages(stages, BUILTIN_ORDER),
        providers=_merge(pm.hook.kubitect_vm_providers(), "VM provider"),
        load_balancers=_merge(pm.hook.kubitect_load_balancers(), "load balancer"),
        installers=_merge(pm.hook.kubitect_installers(), "Kubernetes installer"),
        extensions=[e for exts in pm.hook.kubitect_config_extensions() for e in (exts or [])],
    )
    _describe(registry)
    return registry


def _describe(registry: Registry) -> None:
    """Fills PluginInfo.provides, so `kubitect list plugins` can say what each plugin adds."""
    by_plugin = {id(plugin): by for by in registry.plugins
                 for name, plugin in registry.pm.list_name_plugin() if name == by.name}
    labels = {"kubitect_register_stages": "stage", "kubitect_vm_providers": "provider",
              "kubitect_load_balancers": "load balancer", "kubitect_installers": "installer"}
    for hook_name, label in labels.items():
        for impl in getattr(registry.pm.hook, hook_name).get_hookimpls():
            info = by_plugin.get(id(impl.plugin))
            result = impl.function() or []
            names = [s.name for s in result] if isinstance(result, list) else list(result)
            if info:
                info.provides += [f"{label} {n}" for n in names]
    for impl in registry.pm.hook.kubitect_config_extensions.get_hookimpls():
        if info := by_plugin.get(id(impl.plugin)):
            info.provides += [f"config key {e.path}.{e.key}" for e in impl.function() or []]
    for hook_name in ("kubitect_stage_started", "kubitect_stage_finished"):
        for impl in getattr(registry.pm.hook, hook_name).get_hookimpls():
            info = by_plugin.get(id(impl.plugin))
            if info and "observer" not in info.provides:
                info.provides.append("observer")
