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
from pathlib import Path
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
    conformance: list[str] = field(default_factory=list)  # pytest module paths

    @property
    def load_errors(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def conformance_modules(self) -> list[str]:
        return list(self.conformance)


def _csv_env(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def _merge(results: list[tuple[PluginInfo, dict[str, Any]]], kind: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _, result in results:
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

    by_id = {id(plugin): info for info in infos for name, plugin in pm.list_name_plugin() if name == info.name}
    stages: list[Stage] = [s for _, result in _collect(pm, "kubitect_register_stages", by_id, "stage")
                           for s in result or []]
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"more than one plugin registers the stage(s) {sorted(dupes)}")
    return Registry(
        pm=pm,
        plugins=infos,
        stages=order_stages(stages, BUILTIN_ORDER),
        providers=_merge(_collect(pm, "kubitect_vm_providers", by_id, "provider"), "VM provider"),
        load_balancers=_merge(_collect(pm, "kubitect_load_balancers", by_id, "load balancer"), "load balancer"),
        installers=_merge(_collect(pm, "kubitect_installers", by_id, "installer"), "Kubernetes installer"),
        extensions=[e for _, exts in _collect(pm, "kubitect_config_extensions", by_id, "config key")
                    for e in exts or []],
        conformance=[m for _, mods in _collect(pm, "kubitect_conformance_modules", by_id, "conformance")
                     for m in mods or []],
    )


def _collect(pm: pluggy.PluginManager, hook_name: str, by_id: dict[int, PluginInfo], label: str):
    """Calls one start-up hook plugin by plugin, so a plugin that raises is reported by name.

    Also fills PluginInfo.provides, which `kubitect list plugins` shows. Observers are noted once.
    """
    out = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        info = by_id.get(id(impl.plugin)) or PluginInfo(str(impl.plugin_name), "?")
        try:
            result = impl.function()
        except Exception as exc:
            info.error = f"{hook_name}() raised {type(exc).__name__}: {exc}"
            continue
        items = result or []
        if label == "config key":
            names = [f"{e.path}.{e.key}" for e in items]
        elif label == "conformance":
            names = [Path(m).stem for m in items]
        else:
            names = [getattr(e, "name", e) for e in items]
        info.provides += [f"{label} {n}" for n in names]
        out.append((info, result))
    if hook_name == "kubitect_register_stages":
        for observer_hook in ("kubitect_stage_started", "kubitect_stage_finished"):
            for impl in getattr(pm.hook, observer_hook).get_hookimpls():
                info = by_id.get(id(impl.plugin))
                if info and "observer" not in info.provides:
                    info.provides.append("observer")
    return out
