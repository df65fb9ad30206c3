"""The whole plugin contract of kubitect, in one place.

A plugin is any module or object with functions named like the hooks below and marked with
`kubitect_core.hookspecs.hookimpl`. Built-in plugins and third-party plugins are found the same
way: through the `kubitect` entry-point group (`[project.entry-points.kubitect]` in a package's
pyproject.toml). The manager calls `check_pending()` after loading, so a misspelt hook name is an
error at start-up instead of a silently ignored function.

Selection is by name from the config: `hosts[].provider` picks a VM provider,
`cluster.nodes.loadBalancer` is served by the load balancer named by the engine (default
"keepalived-haproxy"), and `kubernetes.manager` picks the installer. Swapping one is a one-word
change in YAML; an unknown name fails validation with the list of installed choices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

PROJECT = "kubitect"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def kubitect_register_stages() -> list[Any]:
    """Called once at start-up. Return stage objects (see `kubitect_core.stage.Stage`) to add.

    The built-in pipeline registers validate, network, storage, vms, loadbalancers, kubernetes
    and verify. A third party may add its own stage; it declares `after` (the stage it runs
    after) and `requires` (stages that must have completed once). Return [] to add none.
    """


@hookspec
def kubitect_vm_providers() -> dict[str, Any]:
    """Called once at start-up. Return {name: VmProvider} for the providers this plugin offers.

    A host selects one with `hosts[].provider` (default "libvirt"). See
    `kubitect_core.contracts.VmProvider` for the methods; the object is used for the network,
    storage and vms stages of every host that names it.
    """


@hookspec
def kubitect_load_balancers() -> dict[str, Any]:
    """Called once at start-up. Return {name: LoadBalancer} for the implementations offered.

    The loadbalancers stage uses the one named in the config extension `loadBalancer.implementation`
    (default "keepalived-haproxy"). See `kubitect_core.contracts.LoadBalancer`.
    """


@hookspec
def kubitect_installers() -> dict[str, Any]:
    """Called once at start-up. Return {name: KubernetesInstaller} for the installers offered.

    `kubernetes.manager` selects one by name; its `supported_versions` bound
    `kubernetes.version` during validation. See `kubitect_core.contracts.KubernetesInstaller`.
    """


@hookspec
def kubitect_config_extensions() -> list[Any]:
    """Called before a config is validated. Return `ConfigExtension`s: extra keys this plugin owns.

    Each names a mapping in the config (dot path) and a key under it, validated by the plugin's
    own pydantic model. Errors in it are reported like any other config error (path, line).
    """


@hookspec
def kubitect_conformance_modules() -> list[str]:
    """Called by the verify stage. Return paths of extra pytest-testinfra modules to run.

    Each module receives the standard fixtures of `kubitect_conformance` (cluster, topology,
    hosts by role). Return [] to add none.
    """


@hookspec
def kubitect_stage_started(cluster: str, stage: str, action: str, cluster_dir: Path) -> None:
    """Called when a stage begins `action` ("plan", "apply", "destroy"). Observers only."""


@hookspec
def kubitect_stage_progress(cluster: str, stage: str, subject: str, message: str) -> None:
    """Called while a stage works: `subject` is a node or host name, `message` what happens."""


@hookspec
def kubitect_stage_finished(
    cluster: str, stage: str, action: str, ok: bool, seconds: float, changes: list[Any], error: str | None,
    cluster_dir: Path,
) -> None:
    """Called when a stage ends, successfully or not, with its changes and elapsed time."""
