"""Loads plugins (built-in and third-party alike) and collects what they provide.

Built-ins are not special: they are found through the `kubitect` entry-point group like any
third party's package. Two environment variables exist for tests and for users who want to try a
plugin without packaging it: `KUBITECT_PLUGINS` (comma-separated importable modules to register
as extra plugins) and `KUBITECT_DISABLE_PLUGINS` (comma-separated entry-point names to skip).

Every object a plugin offers is checked against its protocol (`kubitect_core.contracts`) as it
is collected. A plugin that fails to import, raises in a hook, or offers an object that does not
satisfy the contract is reported by name (`Registry.load_errors`, `kubitect list plugins`) and
what it offered wrongly is left out; the CLI keeps working with the rest.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from kubitect_core import hookspecs
from kubitect_core.contract_check import contract_problems
from kubitect_core.contracts import ConfigExtension, KubernetesInstaller, LoadBalancer, VmProvider
from kubitect_core.defaults import DefaultChoice, choose
from kubitect_core.stage import Stage, order_stages

ENTRY_POINT_GROUP = "kubitect"
BUILTIN_ORDER = ("validate", "network", "storage", "vms", "loadbalancers", "kubernetes", "verify")


@dataclass
class PluginInfo:
    name: str
    source: str  # "entry point <dist> <version>" or "module" (KUBITECT_PLUGINS)
    provides: list[str] = field(default_factory=list)
    error: str | None = None

    def fail(self, problem: str) -> None:
        """Adds a problem to what `kubitect list plugins` shows for this plugin."""
        self.error = problem if not self.error else f"{self.error}; {problem}"


@dataclass
class Registry:
    """Everything the installed plugins offer, by name."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    stages: list[Stage]
    providers: dict[str, VmProvider]
    load_balancers: dict[str, LoadBalancer]
    installers: dict[str, KubernetesInstaller]
    extensions: list[ConfigExtension]
    conformance: list[str] = field(default_factory=list)  # pytest module paths
    # The implementation a config that names none gets, per kind: "provider", "load_balancer",
    # "installer" (see `kubitect_core.defaults`).
    defaults: dict[str, DefaultChoice] = field(default_factory=dict)

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
    stages: list[Stage] = [s for _, result in _collect(pm, "kubitect_register_stages", by_id) for s in result]
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"more than one plugin registers the stage(s) {sorted(dupes)}")
    _note_observers(pm, by_id)
    providers = _merge(_collect(pm, "kubitect_vm_providers", by_id), "VM provider")
    load_balancers = _merge(_collect(pm, "kubitect_load_balancers", by_id), "load balancer")
    installers = _merge(_collect(pm, "kubitect_installers", by_id), "Kubernetes installer")
    defaults = {"provider": choose("VM provider", providers),
                "load_balancer": choose("load balancer", load_balancers),
                "installer": choose("Kubernetes installer", installers)}
    _note_defaults(infos, defaults)
    return Registry(
        pm=pm,
        plugins=infos,
        stages=order_stages(stages, BUILTIN_ORDER),
        providers=providers,
        load_balancers=load_balancers,
        installers=installers,
        extensions=[e for _, exts in _collect(pm, "kubitect_config_extensions", by_id) for e in exts],
        conformance=[m for _, mods in _collect(pm, "kubitect_conformance_modules", by_id) for m in mods],
        defaults=defaults,
    )


@dataclass(frozen=True)
class _Offer:
    """How to read and check what one start-up hook returns."""

    label: str  # the word `kubitect list plugins` shows before each name
    by_name: bool  # the hook returns {name: object} (else a list)
    check: Callable[[Any], list[str]]
    shown: Callable[[Any], str] = str


def _checked(contract: type) -> Callable[[Any], list[str]]:
    return lambda obj: contract_problems(obj, contract)


def _stage_problems(stage: Any) -> list[str]:
    problems = contract_problems(stage, Stage)
    if not (isinstance(getattr(stage, "name", None), str) and stage.name):
        problems.insert(0, "a stage needs a non-empty name")
    return problems


def _conformance_problems(path: Any) -> list[str]:
    if not isinstance(path, (str, Path)):
        return [f"a conformance module is a path, not {type(path).__name__}"]
    return [] if Path(path).is_file() else [f"conformance module {path} does not exist"]


OFFERS: dict[str, _Offer] = {
    "kubitect_register_stages": _Offer("stage", False, _stage_problems, lambda s: getattr(s, "name", "?")),
    "kubitect_vm_providers": _Offer("provider", True, _checked(VmProvider)),
    "kubitect_load_balancers": _Offer("load balancer", True, _checked(LoadBalancer)),
    "kubitect_installers": _Offer("installer", True, _checked(KubernetesInstaller)),
    "kubitect_config_extensions": _Offer(
        "config key", False,
        lambda e: [] if isinstance(e, ConfigExtension) else [f"{e!r} is not a ConfigExtension"],
        lambda e: f"{e.path}.{e.key}"),
    "kubitect_conformance_modules": _Offer("conformance", False, _conformance_problems, lambda m: Path(m).stem),
}


def _collect(pm: pluggy.PluginManager, hook_name: str, by_id: dict[int, PluginInfo]) -> list[tuple[PluginInfo, Any]]:
    """Calls one start-up hook plugin by plugin, and keeps only what satisfies the contract.

    A plugin that raises, returns the wrong shape, or offers an object the contract check
    rejects is reported by name (`PluginInfo.error`); its other offers stay. Also fills
    `PluginInfo.provides`, which `kubitect list plugins` shows.
    """
    offer = OFFERS[hook_name]
    out = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        info = by_id.get(id(impl.plugin)) or PluginInfo(str(impl.plugin_name), "?")
        try:
            result = impl.function()
        except Exception as exc:
            info.fail(f"{hook_name}() raised {type(exc).__name__}: {exc}")
            continue
        result = result or ({} if offer.by_name else [])
        if not isinstance(result, Mapping if offer.by_name else (list, tuple)):
            info.fail(f"{hook_name}() must return a {'dict {name: object}' if offer.by_name else 'list'}, "
                      f"not {type(result).__name__}")
            continue
        kept: Any = {} if offer.by_name else []
        for key, obj in (result.items() if offer.by_name else enumerate(result)):
            problems = offer.check(obj)
            if offer.by_name and isinstance(getattr(obj, "name", None), str) and obj.name != key:
                problems.append(f"it is offered as '{key}' but its name is '{obj.name}'")
            shown = key if offer.by_name else offer.shown(obj)
            if problems:
                info.fail(f"{offer.label} '{shown}' ignored, it does not satisfy the contract: {'; '.join(problems)}")
                continue
            info.provides.append(f"{offer.label} {shown}")
            if offer.by_name:
                kept[key] = obj
            else:
                kept.append(obj)
        out.append((info, kept))
    return out


def _note_observers(pm: pluggy.PluginManager, by_id: dict[int, PluginInfo]) -> None:
    for observer_hook in ("kubitect_stage_started", "kubitect_stage_finished"):
        for impl in getattr(pm.hook, observer_hook).get_hookimpls():
            info = by_id.get(id(impl.plugin))
            if info and "observer" not in info.provides:
                info.provides.append("observer")


def _note_defaults(infos: list[PluginInfo], defaults: dict[str, DefaultChoice]) -> None:
    """Marks the defaults in what `kubitect list plugins` shows (and a disputed one as disputed)."""
    labels = {"provider": "provider", "load_balancer": "load balancer", "installer": "installer"}
    for key, choice in defaults.items():
        for name in choice.claimants:
            entry = f"{labels[key]} {name}"
            suffix = " (default)" if choice.name else f" (claims the default, as do: {', '.join(choice.claimants)})"
            for info in infos:
                info.provides = [p + suffix if p == entry else p for p in info.provides]
