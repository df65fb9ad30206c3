"""Config commands: `validate`, `schema`, `list presets`, `export preset`.

Bad input never shows a traceback: an invalid config prints boxed errors (`kubitect_core.cli.errors`)
and exits 1; a usage mistake (no config given, unknown preset) exits 2.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubitect_core.cli import completion_values as values
from kubitect_core.cli import output
from kubitect_core.cli.errors import Problem, config_failure, fail, print_problems
from kubitect_core.cli.groups import export_app, list_app, output_option

if TYPE_CHECKING:  # the config models load only in the commands that read a config (fast start)
    from kubitect_core.config import ConfigIssue, LoadedConfig, ValidationContext

EXIT_INVALID = 1
EXIT_USAGE = 2
ROLE_NAMES = {"lb": ("load balancer", "load balancers"), "master": ("master", "masters"),
              "worker": ("worker", "workers")}


def validation_context() -> ValidationContext:
    """What the installed plugins accept (installers, providers, config extensions).

    When the plugin set itself is inconsistent (two plugins claim one name), no plugin is loaded:
    `validate` and `schema` still run, and the warning says that every plugin choice the config
    makes will then read as not installed, and where to look (`kubitect list plugins`).
    """
    from kubitect_core.config import ValidationContext, from_registry
    from kubitect_core.config.context import remember
    from kubitect_core.plugins import load_registry

    try:
        registry = load_registry()
    except RuntimeError as exc:  # e.g. two plugins register one stage name
        if not output.machine():
            _err().print(f"[yellow]warning[/yellow] no plugin loaded: {escape(str(exc))}. Every plugin the "
                         "config names (provider, installer, load balancer) will read as not installed until "
                         "the conflict is fixed; `kubitect list plugins` shows it")
        return remember(ValidationContext())  # what default_context() gives then, without a second load
    return remember(from_registry(registry))


def _out() -> Console:
    from kubitect_core.ui import console

    return console


def _err() -> Console:
    from kubitect_core.ui import err_console

    return err_console


def print_issues(issues: list[ConfigIssue], console: Console | None = None) -> None:
    """One box per issue (warnings too): see `kubitect_core.cli.errors`."""
    print_problems([Problem.from_issue(i) for i in issues], console)


def load_or_fail(path: Path) -> LoadedConfig:
    """The validated config, or the config failure rendered and the command ended (exit 1)."""
    from kubitect_core.config import ConfigError, load_config

    try:
        return load_config(path, context=validation_context())
    except ConfigError as exc:
        raise fail(config_failure(exc.issues, path)) from None


def resolve_config_arg(config: Path | None, positional: Path | None) -> Path:
    """--config/-c or the positional FILE (not two different ones); a usage error otherwise."""
    if config and positional and config != positional:
        raise typer.BadParameter("give the config once: either --config FILE or FILE, not both.")
    chosen = config or positional
    if chosen is None:
        raise typer.BadParameter("no config file given; use --config FILE (e.g. kubitect validate "
                                 "--config ha.yaml).", param_hint="--config")
    return chosen


def print_summary(loaded: LoadedConfig, console: Console) -> None:
    """The topology at a glance: nodes per role and host, VIP, endpoint, warnings, notices."""
    topo = loaded.topology
    roles = Counter(n.role for n in topo.nodes)
    hosts = loaded.config.hosts
    counts = ", ".join(f"{roles.get(r, 0)} {ROLE_NAMES[r][roles.get(r, 0) != 1]}"
                       for r in ("lb", "master", "worker"))
    console.print(f"[green]✓[/green] {escape(str(loaded.source or 'config'))} is valid: cluster "
                  f"[bold]{escape(topo.cluster)}[/bold], {counts} over {len(hosts)} "
                  f"host{'s' if len(hosts) != 1 else ''}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("host", "connection", "provider", "load balancers", "masters", "workers"):
        table.add_column(col)
    for host in hosts:
        on = Counter(n.role for n in topo.on_host(host.name))
        conn = host.connection.type if host.connection.is_local else f"remote {host.connection.ip}"
        name = host.name + (" (default)" if host.default else "")
        table.add_row(escape(name), escape(conn), escape(host.provider),
                      *(str(on.get(r, 0)) for r in ("lb", "master", "worker")))
    console.print(table)
    net = loaded.config.cluster.network
    # Every value below comes from the config: printed as text, never as rich markup ("[/x]").
    console.print(escape(f"network: {net.mode} {net.cidr} gateway {net.gateway}"
                         + (f" bridge {net.bridge}" if net.bridge else "")))
    console.print(escape(f"VIP: {topo.vip or 'none'}"
                         + (f" (VRID {topo.virtual_router_id})" if topo.virtual_router_id else "")))
    from kubitect_core.config.context import api_port  # not topology_view's: that imports its SVG renderer

    console.print(escape(f"endpoint: {topo.endpoint or 'assigned by DHCP'}:"
                         f"{api_port(loaded.config.cluster.nodes.load_balancer.implementation)}"))
    k8s = loaded.config.kubernetes
    console.print(escape(f"kubernetes: {k8s.version} by {k8s.manager}, {k8s.network_plugin}"))
    for warning in loaded.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(warning.path)}: {escape(warning.message)}")
    for notice in loaded.notices:
        console.print(f"[cyan]notice[/cyan] {escape(notice)}")


def summary_data(loaded: LoadedConfig, preflight_passed: bool | None) -> dict[str, Any]:
    """What `validate -o json|yaml` prints: the summary's facts as data (docs/events.md)."""
    topo = loaded.topology
    net = loaded.config.cluster.network
    k8s = loaded.config.kubernetes

    def roles(nodes) -> dict[str, int]:
        return {r: sum(1 for n in nodes if n.role == r) for r in ("lb", "master", "worker")}

    return {
        "v": output.EVENTS_VERSION, "kind": "validation", "valid": True, "file": str(loaded.source or ""),
        "cluster": topo.cluster,
        "nodes": roles(topo.nodes),
        "hosts": [{"name": h.name, "default": bool(h.default), "connection": h.connection.type,
                   "ip": None if h.connection.is_local else h.connection.ip, "provider": h.provider,
                   "nodes": roles(topo.on_host(h.name))}
                  for h in loaded.config.hosts],
        "network": {"mode": net.mode, "cidr": str(net.cidr), "gateway": str(net.gateway) if net.gateway else None,
                    "bridge": net.bridge},
        "vip": topo.vip, "virtual_router_id": topo.virtual_router_id, "endpoint": topo.endpoint or None,
        "kubernetes": {"version": k8s.version, "manager": k8s.manager, "network_plugin": k8s.network_plugin},
        "warnings": [Problem.from_issue(w).data() for w in loaded.warnings],
        "notices": list(loaded.notices),
        "preflight": None if preflight_passed is None else {"passed": preflight_passed},
    }


def validate(
    file: Path | None = typer.Argument(None, metavar="FILE", help="Config file (same as --config)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file to validate."),
    run_preflight: bool = typer.Option(
        False, "--preflight", help="Also check this machine: key files the config names exist."),
    fmt: output.Format = output_option("text (a summary), json or yaml (the summary as data)."),
) -> None:
    """Check a config file and print a summary of the cluster it describes.

    Example: kubitect validate --config examples/ha.yaml
    """
    from kubitect_core.config import preflight

    path = resolve_config_arg(config, file)
    loaded = load_or_fail(path)
    problems = preflight(loaded) if run_preflight else []
    if problems:
        raise fail(config_failure(problems, path, kind="preflight", headline="preflight failed for"))
    if output.machine():
        output.document(summary_data(loaded, True if run_preflight else None))
        return
    out = _out()
    print_summary(loaded, out)
    if run_preflight:
        out.print("[green]✓[/green] preflight passed")


def schema() -> None:
    """Print the JSON Schema of the config (for yaml-language-server in editors).

    Example: kubitect schema > kubitect.schema.json
    """
    from kubitect_core.config import json_schema

    typer.echo(json.dumps(json_schema(validation_context()), indent=2))


def presets_list(fmt: output.Format = output_option()) -> None:
    """List the preset configs shipped with kubitect.

    Example: kubitect list presets
    """
    from kubitect_core.config import list_presets

    if output.machine():
        output.document(output.listing("preset-list", [{"name": n} for n in list_presets()]))
        return
    typer.echo("Available presets:")
    for name in list_presets():
        typer.echo(f"  - {name}")


def preset_export(
    name: str = typer.Option(..., "--name", "-n", help="Preset name (see `kubitect list presets`).",
                             autocompletion=values.presets),
    fmt: output.Format = output_option("text or yaml (the file) or json (the same data as JSON)."),
) -> None:
    """Print a preset config, ready to edit and apply.

    Example: kubitect export preset --name getting-started > cluster.yaml
    """
    from kubitect_core.config import list_presets, preset_text

    try:
        text = preset_text(name)
    except KeyError:
        raise typer.BadParameter(f"unknown preset '{name}'; available presets: {', '.join(list_presets())}.",
                                 param_hint="--name") from None
    if output.current() is output.Format.json:
        from kubitect_core.config import parse_yaml

        output.document(parse_yaml(text, f"preset {name}"))
        return
    typer.echo(text, nl=not text.endswith("\n"))


def register(app: typer.Typer) -> None:
    """Adds validate and schema to the root app, and presets to the `list`/`export` groups."""
    app.command("validate")(validate)
    app.command("schema")(schema)
    list_app.command("presets")(presets_list)
    list_app.command("preset", hidden=True)(presets_list)  # Kubitect's alias
    export_app.command("preset")(preset_export)
