"""The whole plugin contract of kubitect, in one place: when each hook is called, with what, and
what it must return.

A plugin is any module or object with functions named like the hooks below and marked with
`hookimpl` (import it from the SDK: `from kubitect_core.sdk import hookimpl`). Built-in plugins and
third-party plugins are found the same way: through the `kubitect` entry-point group
(`[project.entry-points.kubitect]` in a package's pyproject.toml). A hook implementation may take
any subset of the arguments its spec lists, by name.

Loading (`kubitect_core.plugins.load_registry`) happens once per command:

1. every entry point is imported and registered; `check_pending()` turns a function that looks
   like a hook but names none (a typo) into an error at start-up;
2. the start-up hooks (`kubitect_register_stages` ... `kubitect_conformance_modules`) are called,
   plugin by plugin; every object returned is checked against its protocol in
   `kubitect_core.contracts` (methods present, async where awaited, the right arguments). A plugin
   that fails any of this is reported by name (`kubitect list plugins`), what it offered wrongly
   is left out, and the other plugins work as usual;
3. during a run, the observer hooks (`kubitect_stage_*`) are called around every stage.

Selection is by name from the config: `hosts[].provider` picks a VM provider,
`cluster.nodes.loadBalancer.implementation` the load balancer, `kubernetes.manager` the
installer. Swapping one is a one-word change in YAML; an unknown name fails validation with the
list of installed choices. When the config leaves one out, the implementation that declares
itself the default (`default = True` on the object) serves it; see `kubitect_core.defaults`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from kubitect_core.contracts import (
        Change,
        ConfigExtension,
        KubernetesInstaller,
        LoadBalancer,
        StageContext,
        VmProvider,
    )
    from kubitect_core.stage import Stage
    from kubitect_core.topology import Node

PROJECT = "kubitect"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------- start-up hooks


@hookspec
def kubitect_register_stages() -> list[Stage]:
    """Add stages to the pipeline.

    Called once per command, after every plugin is registered and before any config is read.

    :returns: `Stage` objects (subclasses of `kubitect_core.sdk.Stage`), or [] to add none. Each
        has a unique, non-empty `name` and async `plan`, `apply` and `destroy(ctx, registry)`.
        The built-in pipeline (validate, network, storage, vms, loadbalancers, kubernetes,
        verify) is registered this way too. A third party's stage declares `after` (the stage it
        runs after; before verify when that stage is unknown) and `requires` (stages that must
        have completed once before `kubitect run --stage <it>` may run it alone).

    Two plugins registering one stage name stop the command with an error naming the stage.
    """


@hookspec
def kubitect_vm_providers() -> dict[str, VmProvider]:
    """Offer VM providers: what makes the machines of the hosts that select them.

    Called once per command, at start-up.

    :returns: {name: provider}, each satisfying `kubitect_core.contracts.VmProvider`: a `name`
        equal to its key, three layer objects `network`, `storage` and `vms`
        (`kubitect_core.contracts.MachineLayer`: async `plan`, `apply`, `destroy(ctx, hosts)`)
        and async `preflight(ctx, hosts) -> list[str]`. `default = True` makes it serve hosts
        whose `provider` the config leaves out. Return {} to offer none.

    A host selects one with `hosts[].provider`. The network, storage and vms stages call the
    matching layer of each selected provider with the names of the hosts that select it; the
    validate stage calls `preflight`.
    """


@hookspec
def kubitect_load_balancers() -> dict[str, LoadBalancer]:
    """Offer load balancer / VIP implementations for the control-plane endpoint.

    Called once per command, at start-up.

    :returns: {name: implementation}, each satisfying `kubitect_core.contracts.LoadBalancer`:
        a `name` equal to its key and async `plan`, `apply`, `destroy(ctx)`; apply records
        `ctx.record["endpoint"]`. `default = True` makes it serve configs that leave
        `cluster.nodes.loadBalancer.implementation` out. Return {} to offer none.

    The loadbalancers stage calls the one the config names.
    """


@hookspec
def kubitect_installers() -> dict[str, KubernetesInstaller]:
    """Offer Kubernetes installers.

    Called once per command, at start-up.

    :returns: {name: installer}, each satisfying `kubitect_core.contracts.KubernetesInstaller`:
        a `name` equal to its key, `supported_versions` (inclusive range) and `maintained_from`
        (which bound `kubernetes.version` during validation), `internet_reason(ctx)` (None or
        why its sources cannot be reached from here; the stage is then skipped, not failed) and
        async `plan`, `apply`, `destroy(ctx)`; apply records `ctx.record["kubeconfig"]`.
        `default = True` makes it serve configs without `kubernetes.manager`; `aliases` names
        other manager names it serves. Return {} to offer none.

    The kubernetes stage calls the one `kubernetes.manager` names.
    """


@hookspec
def kubitect_config_extensions() -> list[ConfigExtension]:
    """Add config keys this plugin owns, validated by its own pydantic models.

    Called once per command, at start-up, before any config is validated.

    :returns: `ConfigExtension`s (a dot path of a mapping in the config, a key under it, the
        model). Errors in the key are reported like any other config error (path, line); a
        config without the key validates the model's defaults. The validated model reaches the
        plugin as `ctx.extensions["<path>.<key>"]`. Return [] to add none.
    """


@hookspec
def kubitect_conformance_modules() -> list[str]:
    """Contribute conformance checks run by the verify stage.

    Called once per command, at start-up.

    :returns: paths of pytest-testinfra modules (existing files). Each module receives the
        standard fixtures of the generic suite by name (inventory, hosts by role, VIP, vantage;
        listed in `kubitect_core.sdk.conformance`, which also holds the helpers a module may
        import). Return [] to add none.
    """


# ---------------------------------------------------------------------------- run-time hooks


@hookspec
def kubitect_nodes_leaving(ctx: StageContext, nodes: list[Node], dry_run: bool) -> list[Change]:
    """Make way for nodes that an apply is about to remove (scale-in, a master removed, a node
    replaced).

    Called by the engine during `plan` (`dry_run=True`: say what you would do, touch nothing) and
    `apply` (`dry_run=False`), after validation and before the installer cordons, drains and
    deletes the leaving nodes' Kubernetes nodes and before their machines are deleted. `nodes` are
    the leaving nodes as built (`ip`, `host`, `domain` as recorded); `ctx` is the kubernetes
    stage's context (`ctx.record` is the installer's record, `ctx.facts` every stage's).

    A plugin that keeps data or duties on those nodes moves them away here (e.g. Ceph OSDs marked
    out and drained). When it cannot do so safely it raises `kubitect_core.sdk.StageError` saying
    why, with the numbers (capacity left, replicas wanted): the apply then stops before anything
    is drained or deleted, and a re-run after the user's fix starts over.

    The implementation may be `async def` (it usually needs SSH): the engine awaits what it
    returns. Implementations run one after the other.

    :returns: the changes it planned or made (e.g. `Change("delete", "osd", "osd.3", ...)`), or [].
    """


# ---------------------------------------------------------------------------- observer hooks
# Called around every stage of a run, by the engine. Observers only: what they return is ignored,
# and they must not raise (a progress display, a log, a timing file).


@hookspec
def kubitect_stage_started(cluster: str, stage: str, action: str, cluster_dir: Path) -> None:
    """Called when a stage begins `action` ("plan", "apply", "destroy") for `cluster`, whose
    files live in `cluster_dir`."""


@hookspec
def kubitect_stage_progress(cluster: str, stage: str, subject: str, message: str) -> None:
    """Called while a stage works: `subject` is a node or host name, `message` what happens to it."""


@hookspec
def kubitect_stage_finished(
    cluster: str, stage: str, action: str, ok: bool, seconds: float, changes: list[Change], error: str | None,
    cluster_dir: Path,
) -> None:
    """Called when a stage ends, successfully (`ok`) or not, with the changes it made and its
    elapsed time; `error` says why it failed, or starts with "skipped: " for a skipped stage."""
