"""Pipeline commands: apply, plan, run, destroy, verify, and the cluster listings and exports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from kubitect_core.cli.groups import EXIT_USAGE, cluster_option, export_app, list_app
from kubitect_core.paths import kubitect_home
from kubitect_core.ui import JsonEvents, RichProgress, console, err_console, error_box, is_interactive

HOME_HELP = "Kubitect home (default: $KUBITECT_HOME or ~/.kubitect)."
ACTIONS = ("create", "upgrade", "scale")
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
NO_TTY = ("Not confirmed: this deletes data (listed above), and there is no terminal to ask on. "
          "Re-run with -y/--auto-approve to confirm.")
KUBECONFIG_NAME_HELP = ("Merge the kubeconfig into ~/.kube/config under this name instead of the cluster's "
                        "(when another tool already uses that name there).")


def _config_path(option: Path | None, argument: Path | None) -> Path:
    """The config file given as --config or positionally (exactly one), else a usage error."""
    if option and argument and option != argument:
        raise typer.BadParameter("give the config once, either as --config FILE or as FILE")
    path = option or argument
    if path is None:
        raise typer.BadParameter("a config file is required: --config FILE (or FILE)")
    return path


def _registry():
    from kubitect_core.plugins import load_registry

    registry = load_registry()
    for broken in registry.load_errors:
        error_box(f"Plugin '{broken.name}' failed to load and is ignored", [broken.error or ""])
    return registry


def _engine(home: str | None, output: str, *, auto_approve: bool):
    """Builds the engine with its observers: rich progress (text) or JSON lines (json)."""
    from kubitect_core.engine import Aborted, Engine

    registry = _registry()
    progress = None
    if output == "json":
        registry.pm.register(JsonEvents(stream=sys.stdout), name="json-events")
    else:
        progress = RichProgress()
        registry.pm.register(progress, name="rich-progress")

    def confirm(confirmation) -> bool:
        """Shows what would change and be lost; like Terraform, deleting data without a terminal
        to ask on needs -y."""
        out = console if output == "text" else err_console
        if confirmation.events:
            out.print("[bold]Changes since the last apply:[/bold]")
            _print_events(confirmation.events, out)
        for line in confirmation.data_loss:
            out.print(f"[bold red]data loss:[/bold red] [red]{escape(line)}[/red]", soft_wrap=True)
        if auto_approve:
            return True
        if not is_interactive():
            if confirmation.destructive:
                raise Aborted(NO_TTY)
            return True
        return typer.confirm(confirmation.question, default=False)

    say = (lambda m: err_console.print(escape(m), soft_wrap=True)) if output == "json" else \
        (lambda m: console.print(escape(m), soft_wrap=True))
    return Engine(kubitect_home(home), registry, confirm=confirm, say=say), progress


def _event_log(engine, cluster_name: str) -> None:
    from kubitect_core.state import ClusterState

    engine.registry.pm.register(JsonEvents(path=ClusterState(engine.home, cluster_name).events_path),
                                name="event-log")


def _handle(fn, output: str = "text", progress: RichProgress | None = None) -> Any:
    """Runs an engine call and turns every expected failure into a message and an exit code:
    1 for a failure, 2 for a name that is not a cluster name, 130/143 for Ctrl-C/SIGTERM."""
    from kubitect_core.config import ConfigError
    from kubitect_core.engine import ChangesRefused, EngineError, StageFailed, Terminated
    from kubitect_core.kubeconfig import KubeconfigError
    from kubitect_core.legacy import LegacyClusterError
    from kubitect_core.paths import ClusterNameError
    from kubitect_core.stage import StageError
    from kubitect_core.state import StateError

    try:
        return fn()
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(1) from None
    except ChangesRefused as exc:
        _print_events(exc.events)
        error_box("Error", [str(exc)])
        raise typer.Exit(1) from None
    except StageFailed as exc:
        if progress is not None and progress.failed:  # the cause is on screen already, once
            error_box("Error", [f"stage '{exc.stage}' failed during {exc.action} (the cause is shown above)"])
        else:
            error_box("Error", [str(exc)])
        raise typer.Exit(1) from None
    except ClusterNameError as exc:
        error_box("Error", [str(exc)])
        raise typer.Exit(EXIT_USAGE) from None
    except (EngineError, StageError, StateError, LegacyClusterError, KubeconfigError) as exc:
        error_box("Error", [str(exc)])
        raise typer.Exit(1) from None
    except Terminated:
        error_box("Terminated", ["Re-run the same command: it continues where it stopped."])
        raise typer.Exit(EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        error_box("Interrupted", ["Re-run the same command: it continues where it stopped."])
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _print_config_error(exc) -> None:
    from kubitect_core.cli.config_cmds import MAX_SHOWN_ISSUES

    for issue in exc.issues[:MAX_SHOWN_ISSUES]:
        where = f"{issue.file}:{issue.line}:{issue.column}" if issue.line else (issue.file or "")
        error_box("Invalid configuration", [f"Config path: {issue.path}", f"Location:    {where}",
                                            f"Error:       {issue.message}"])
    if len(exc.issues) > MAX_SHOWN_ISSUES:
        console.print(f"... and {len(exc.issues) - MAX_SHOWN_ISSUES} more errors like these, not shown.")
    err = "1 error" if len(exc.issues) == 1 else f"{len(exc.issues)} errors"
    console.print(f"[red]invalid configuration file ({err})[/red]")


def _print_events(events, out=None) -> None:
    out = out or console
    colours = {"error": "red", "warn": "yellow", "allow": "green"}
    for e in events:
        text = f"[{colours[e.severity]}]{e.severity:5}[/{colours[e.severity]}] {escape(e.describe())}"
        out.print(text + (f"\n        {escape(e.message)}" if e.message else ""), soft_wrap=True)


CHAOS_CASES = ("host",)
HOST_FAULTS = ("power", "uplink")


def _confirm_chaos(chaos: str, host_fault: str, cluster: str, yes: bool) -> None:
    """Destructive cases run only when asked for and confirmed: a prompt, or --yes without a TTY."""
    unknown = [c for c in chaos.split(",") if c not in CHAOS_CASES]
    if unknown or host_fault not in HOST_FAULTS:
        error_box("Error", [f"--chaos takes {', '.join(CHAOS_CASES)}; --host-fault takes {', '.join(HOST_FAULTS)}"])
        raise typer.Exit(2)
    from kubitect_core.lab import MARKER_ENV

    if host_fault == "uplink" and not os.environ.get(MARKER_ENV):
        error_box("Refused", ["--host-fault uplink pulls a simulated host's cable at a lab's switch: run it "
                              "inside a lab that simulates the hosts (kubitect lab up NAME --config FILE, then "
                              "kubitect lab exec NAME -- kubitect verify ...). On real hosts use --host-fault power."])
        raise typer.Exit(2)
    what = {"power": "destroys every VM on the VIP holder's host at once (a power cut); they stay off until "
                     "`kubitect apply --reconcile`",
            "uplink": "cuts the VIP holder's host off the network for a few seconds (lab only)"}[host_fault]
    if yes:
        return
    if not is_interactive():
        error_box("Refused", [f"verify --chaos host {what}. Without a terminal to ask on, pass --yes."])
        raise typer.Exit(2)
    if not typer.confirm(f"verify --chaos host on cluster '{cluster}' {what}. Continue?", default=False):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Adds the pipeline commands and their list/export subcommands."""

    @app.command(epilog="Example: kubitect apply --config ha.yaml")
    def apply(
        config_arg: Path = typer.Argument(None, metavar="[CONFIG]", help="Config file (or use --config)."),
        config: Path = typer.Option(None, "--config", "-c", help="Config file."),
        action: str = typer.Option("create", "--action", "-a", help="create | upgrade | scale"),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Answer yes to every prompt "
                                          "(needed without a terminal when data would be deleted)."),
        reconcile: bool = typer.Option(False, "--reconcile", help="Re-converge every stage even when the "
                                       "config is unchanged (repairs drift)."),
        allow_unverified: bool = typer.Option(False, "--allow-unverified-image", help="Use a base image "
                                              "whose checksum is not published (loudly; never the default)."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        kubeconfig_name: str = typer.Option(None, "--kubeconfig-name", help=KUBECONFIG_NAME_HELP),
        output: str = typer.Option("text", "--output", "-o", help="text | json (JSON lines of events)."),
        home: str = typer.Option(None, "--home", help=HOME_HELP),
    ) -> None:
        """Create, modify, scale or upgrade a cluster so that it matches the config."""
        from kubitect_core.engine import Options, run_sync

        path = _config_path(config, config_arg)
        if action not in ACTIONS:
            raise typer.BadParameter(f"unknown action '{action}'; use one of {', '.join(ACTIONS)}")
        engine, progress = _engine(home, output, auto_approve=auto_approve)
        opts = Options(action=action, auto_approve=auto_approve, reconcile=reconcile, wait_lock=wait_lock,
                       flags=_image_flags(allow_unverified) | _kubeconfig_flags(kubeconfig_name))

        def go():
            cfg = engine.read(path)  # read once: these bytes are validated, applied and stored
            _event_log(engine, cfg.cluster)
            return run_sync(engine.apply(cfg, opts))

        outcome = _handle(go, output, progress)
        if output == "text":
            if outcome.nothing_to_do:
                console.print(escape(outcome.message))
            elif progress:
                progress.summary(f"Cluster '{outcome.cluster}' applied")
            for stage_name, reason in outcome.skipped.items():
                console.print(f"[yellow]Stage '{stage_name}' was skipped: {escape(reason)}[/yellow]\n"
                              "The config is not marked as applied: run apply again once that is resolved.",
                              soft_wrap=True)

    @app.command(epilog="Example: kubitect plan --config ha.yaml")
    def plan(
        config_arg: Path = typer.Argument(None, metavar="[CONFIG]", help="Config file (or use --config)."),
        config: Path = typer.Option(None, "--config", "-c", help="Config file."),
        action: str = typer.Option("create", "--action", "-a", help="create | upgrade | scale"),
        output: str = typer.Option("text", "--output", "-o", help="text | json"),
        home: str = typer.Option(None, "--home", help=HOME_HELP),
    ) -> None:
        """Show what apply would create, change or delete, stage by stage. Touches nothing."""
        from kubitect_core.confirmation import data_loss
        from kubitect_core.engine import Options, run_sync

        path = _config_path(config, config_arg)
        if action not in ACTIONS:
            raise typer.BadParameter(f"unknown action '{action}'; use one of {', '.join(ACTIONS)}")
        engine, progress = _engine(home, output, auto_approve=True)
        outcome = _handle(lambda: run_sync(engine.plan(path, Options(action=action))), output, progress)
        if output == "text":
            if outcome.events:
                console.print("[bold]Config changes since the last apply:[/bold]")
                _print_events(outcome.events)
                for line in data_loss(outcome.events, outcome.cluster):
                    console.print(f"[bold red]data loss:[/bold red] [red]{escape(line)}[/red]", soft_wrap=True)
            total = sum(1 for _, _, ch in outcome.stages for c in ch if c.action != "keep")
            console.print(f"Plan: {total} change(s) across {len(outcome.stages)} stages.")

    @app.command(epilog="Example: kubitect run --stage network --stage storage --stage vms ha.yaml")
    def run(
        config_arg: Path = typer.Argument(None, metavar="[CONFIG]", help="Config file (or use --config)."),
        config: Path = typer.Option(None, "--config", "-c", help="Config file."),
        stage: list[str] = typer.Option(..., "--stage", "-s", help="Stage to run (repeatable)."),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Answer yes to every prompt."),
        allow_unverified: bool = typer.Option(False, "--allow-unverified-image", help="Use a base image "
                                              "whose checksum is not published (loudly; never the default)."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        kubeconfig_name: str = typer.Option(None, "--kubeconfig-name", help=KUBECONFIG_NAME_HELP),
        output: str = typer.Option("text", "--output", "-o", help="text | json"),
        home: str = typer.Option(None, "--home", help=HOME_HELP),
    ) -> None:
        """Run validate plus the named stages of the pipeline (each must have its prerequisites)."""
        from kubitect_core.engine import Options, run_sync

        path = _config_path(config, config_arg)
        engine, progress = _engine(home, output, auto_approve=auto_approve)
        opts = Options(auto_approve=auto_approve, wait_lock=wait_lock,
                       flags=_image_flags(allow_unverified) | _kubeconfig_flags(kubeconfig_name))

        def go():
            cfg = engine.read(path)
            _event_log(engine, cfg.cluster)
            return run_sync(engine.run_stages(cfg, stage, opts))

        outcome = _handle(go, output, progress)
        if output == "text" and progress:
            progress.summary(f"Cluster '{outcome.cluster}': stages {', '.join(stage)}")

    @app.command(epilog="Example: kubitect destroy --cluster kubitect-ha --auto-approve")
    def destroy(
        cluster: str = cluster_option("Name of the cluster to destroy."),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Do not ask for confirmation "
                                          "(required without a terminal)."),
        force: bool = typer.Option(False, "--force", help="Finish even if a host is gone for good: remove "
                                   "what can be removed and list the rest."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        output: str = typer.Option("text", "--output", "-o", help="text | json"),
        home: str = typer.Option(None, "--home", help=HOME_HELP),
    ) -> None:
        """Destroy a cluster: every stage's layer in reverse order, then its directory."""
        from kubitect_core.engine import Options, run_sync

        engine, progress = _engine(home, output, auto_approve=auto_approve)
        outcome = _handle(lambda: run_sync(engine.destroy(cluster, Options(wait_lock=wait_lock, force=force))),
                          output, progress)
        out = console if output == "text" else err_console
        for note in outcome.notes:
            out.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
        if outcome.leftovers:
            out.print("[bold red]Not removed[/bold red] (--force; remove these by hand if the host comes back):")
            for line in outcome.leftovers:
                out.print(f"  - {escape(line)}", soft_wrap=True)
        if output == "text":
            console.print(escape(outcome.message) if outcome.message else
                          f"Cluster '{cluster}' has been destroyed.")

    @app.command(epilog="Example: kubitect verify --cluster kubitect-ha --no-failover\n\n"
                 "Example: kubitect verify --cluster kubitect-ha --chaos host   (destructive: loses a whole host; "
                 "asks first)")
    def verify(
        cluster: str = cluster_option("Name of the cluster to check."),
        failover: bool = typer.Option(True, "--failover/--no-failover", help="Run the VIP failover matrix."),
        junit: Path = typer.Option(None, "--junit", help="Also write JUnit XML here."),
        report: Path = typer.Option(None, "--report", help="Also write the JSON report here."),
        vantage: str = typer.Option(None, "--failover-vantage",
                                    help="Where the prober runs: a node name or 'local' "
                                    "(default: the first worker, else the first master)."),
        margin: float = typer.Option(None, "--failover-margin", help="Seconds added to each timer budget."),
        checks: str = typer.Option(None, "--checks", "-k", help="Only checks matching this pytest -k expression."),
        chaos: str = typer.Option(None, "--chaos", help="Destructive cases to add: 'host' loses the VIP "
                                  "holder's whole host (asks first; never by default)."),
        host_fault: str = typer.Option("power", "--host-fault", help="With --chaos host: 'power' (the host's "
                                       "VMs destroyed at once) or 'uplink' (its cable pulled; lab only)."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before a destructive case."),
        output: str = typer.Option("text", "--output", "-o", help="text | json"),
        home: str = typer.Option(None, "--home", help=HOME_HELP),
    ) -> None:
        """Run the conformance suite (testinfra) against a live cluster and report measured figures."""
        from kubitect_core.engine import Options, run_sync

        if chaos is not None:
            _confirm_chaos(chaos, host_fault, cluster, yes)
        engine, progress = _engine(home, output, auto_approve=True)
        flags = {"failover": failover, "junit": str(junit) if junit else None,
                 "report": str(report) if report else None, "failover_vantage": vantage,
                 "failover_margin": margin, "checks": checks,
                 "chaos": chaos, "host_fault": host_fault if chaos else None}

        def go():
            _event_log(engine, cluster)
            return run_sync(engine.verify(cluster, Options(flags=flags)))

        outcome = _handle(go, output, progress)
        if output == "text" and progress:
            progress.summary(f"Cluster '{outcome.cluster}' verified")

    @list_app.command("clusters", epilog="Example: kubitect list clusters")
    def list_clusters(home: str = typer.Option(None, "--home", help=HOME_HELP),
                      output: str = typer.Option("text", "--output", "-o", help="text | json")) -> None:
        """List the clusters in the kubitect home, with the state of their last run.

        A damaged cluster is marked as such (naming the file) and the others are still listed;
        a cluster directory made by Kubitect (Go) is shown as such.
        """
        from kubitect_core.listing import cluster_rows

        rows = cluster_rows(kubitect_home(home))
        if output == "json":
            typer.echo(json.dumps(rows))
            return
        if not rows:
            console.print("No clusters yet. Run 'kubitect apply --config FILE' to create one.")
            return
        table = Table("cluster", "made by", "status", "directory")
        for r in rows:
            colour = "red" if r["damaged"] else "yellow" if r["made_by"] != "kubitect" else None
            status = f"[{colour}]{escape(r['status'])}[/{colour}]" if colour else escape(r["status"])
            table.add_row(escape(r["name"]), escape(r["made_by"]), status, escape(r["dir"]))
        console.print(table)

    @list_app.command("plugins", epilog="Example: kubitect list plugins")
    def list_plugins() -> None:
        """List installed plugins (built-in and third-party) and what each provides."""
        from kubitect_core.plugins import load_registry

        registry = load_registry()
        table = Table("plugin", "source", "provides")
        for info in registry.plugins:
            provides = f"[red]failed to load: {escape(info.error)}[/red]" if info.error else \
                escape(", ".join(info.provides) or "-")
            table.add_row(info.name, info.source, provides)
        console.print(table)

    @list_app.command("stages", epilog="Example: kubitect list stages")
    def list_stages() -> None:
        """List the pipeline's stages in order, with what each needs."""
        registry = _registry()
        table = Table("#", "stage", "requires", "what it does")
        for i, s in enumerate(registry.stages, 1):
            table.add_row(str(i), s.name, ", ".join(s.requires) or "-", s.description)
        console.print(table)

    @export_app.command("config", epilog="Example: kubitect export config --cluster kubitect-ha")
    def export_config(cluster: str = cluster_option(),
                      home: str = typer.Option(None, "--home", help=HOME_HELP)) -> None:
        """Print the cluster's last applied config (as written by the user)."""
        from kubitect_core.listing import exported_config

        typer.echo(_handle(lambda: exported_config(kubitect_home(home), cluster)), nl=False)

    @export_app.command("kubeconfig", epilog="Example: kubitect export kubeconfig --cluster kubitect-ha")
    def export_kubeconfig(cluster: str = cluster_option(),
                          home: str = typer.Option(None, "--home", help=HOME_HELP)) -> None:
        """Print the cluster's admin kubeconfig."""
        from kubitect_core.listing import exported_kubeconfig

        typer.echo(_handle(lambda: exported_kubeconfig(kubitect_home(home), cluster)), nl=False)


def _image_flags(allow_unverified: bool) -> dict[str, Any]:
    return {"allow_unverified_image": True} if allow_unverified else {}


def _kubeconfig_flags(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    from kubitect_core.kubeconfig import KubeconfigError, check_entry_name

    try:
        return {"kubeconfig_name": check_entry_name(name)}
    except KubeconfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--kubeconfig-name") from None


@export_app.command("report", epilog="Example: kubitect export report --cluster kubitect-ha")
def export_report(cluster: str = cluster_option(),
                  output: str = typer.Option("text", "--output", "-o", help="text | json"),
                  home: str = typer.Option(None, "--home", help=HOME_HELP)) -> None:
    """Print the cluster's last conformance report (checks and measured failover gaps)."""
    from kubitect_core.listing import exported_report

    text = _handle(lambda: exported_report(kubitect_home(home), cluster, output))
    typer.echo(text, nl=output != "json")
