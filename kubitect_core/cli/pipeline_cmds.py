"""Pipeline commands: apply, plan, run, destroy, verify, and the cluster listings and exports.

With `-o json|yaml` a pipeline command writes only events on stdout (docs/events.md): the stage
events as they happen, then one closing event (`result`, or `plan`), or one `error` event.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from kubitect_core.cli import completion_values as values
from kubitect_core.cli import output
from kubitect_core.cli.errors import EXIT_USAGE, Failure, Problem, config_failure, fail
from kubitect_core.cli.groups import (
    cluster_option,
    debug_enabled,
    debug_option,
    export_app,
    home_option,
    list_app,
    local_home,
    local_option,
    output_option,
    resolve_home,
)
from kubitect_core.ui import JsonEvents, RichProgress, change_data, console, err_console, is_interactive

ACTIONS = tuple(values.ACTIONS)
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
EXIT_CHANGES_PENDING = 2  # plan --detailed-exitcode, as Terraform
NO_TTY_EXPLICIT = ("Not confirmed: this deletes data (listed above), and there is no terminal to ask on. "
                   "Re-run with -y/--auto-approve and {flag} to confirm.")
NO_TTY = ("Not confirmed: this deletes data (listed above), and there is no terminal to ask on. "
          "Re-run with -y/--auto-approve to confirm.")
KUBECONFIG_NAME_HELP = ("Merge the kubeconfig into ~/.kube/config under this name instead of the cluster's "
                        "(when another tool already uses that name there).")
ACTION_HELP = "create | upgrade | scale"


def _config_path(option: Path | None, argument: Path | None) -> Path:
    """The config file given as --config or positionally (exactly one), else a usage error."""
    if option and argument and option != argument:
        raise typer.BadParameter("give the config once, either as --config FILE or as FILE")
    path = option or argument
    if path is None:
        raise typer.BadParameter("a config file is required: --config FILE (or FILE)")
    return path


def _check_action(action: str) -> str:
    if action not in ACTIONS:
        raise typer.BadParameter(f"unknown action '{action}'; use one of {', '.join(ACTIONS)}", param_hint="--action")
    return action


def _say(message: str, level: str = "info") -> None:
    """A note to the user: a line on the terminal, or a `message` event under -o json|yaml."""
    if output.machine():
        output.emit(output.event("message", level=level, message=message))
    elif level == "warning" or message.startswith("warning:"):
        err_console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True)
    else:
        console.print(escape(message), soft_wrap=True)


def _registry():
    from kubitect_core.plugins import load_registry

    registry = load_registry()
    for broken in registry.load_errors:
        _say(f"Plugin '{broken.name}' failed to load and is ignored: {broken.error or ''}", "warning")
    return registry


def _live_log_printer():
    """`--debug`: each run-log record on stderr as it is written (stdout stays for output)."""
    def show(text: str) -> None:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True, style="dim")

    return show


def _engine(home: Path, *, auto_approve: bool, local: bool = False):
    """Builds the engine with its observers: rich progress (text) or events on stdout (json|yaml)."""
    from kubitect_core.engine import Aborted, Engine

    registry = _registry()
    progress = None
    if output.machine():
        registry.pm.register(JsonEvents(stream=sys.stdout, format=output.current().value), name="json-events")
    else:
        progress = RichProgress(verbose=debug_enabled())
        registry.pm.register(progress, name="rich-progress")

    def confirm(confirmation) -> bool:
        """Shows what would change and be lost; like Terraform, deleting data without a terminal
        to ask on needs -y."""
        if output.machine():
            output.emit(output.event("confirmation", question=confirmation.question,
                                     changes=[_event_data(e) for e in confirmation.events],
                                     data_loss=list(confirmation.data_loss), destructive=confirmation.destructive))
        else:
            if confirmation.events:
                console.print("[bold]Changes since the last apply:[/bold]")
                _print_events(confirmation.events, console)
            for line in confirmation.data_loss:
                console.print(f"[bold red]data loss:[/bold red] [red]{escape(line)}[/red]", soft_wrap=True)
        if confirmation.explicit and not auto_approve and not is_interactive():
            raise Aborted(NO_TTY_EXPLICIT.format(flag=confirmation.explicit))
        if confirmation.explicit and auto_approve:
            return False  # -y does not answer it: only its own flag (the engine says which)
        if auto_approve:
            return True
        if not is_interactive():
            if confirmation.destructive:
                raise Aborted(NO_TTY)
            return True
        return typer.confirm(confirmation.question, default=False, err=output.machine())

    live = _live_log_printer() if debug_enabled() else None
    engine = Engine(home, registry, confirm=confirm, say=_say, live_log=live, local=local)
    return engine, progress


def _event_log(engine, cluster_name: str) -> None:
    from kubitect_core.state import ClusterState

    engine.registry.pm.register(JsonEvents(path=ClusterState(engine.home, cluster_name).events_path),
                                name="event-log")


def _event_data(e) -> dict[str, Any]:
    return {"path": e.path, "kind": e.kind, "old": e.old, "new": e.new, "severity": e.severity,
            "message": e.message or None}


def _handle(fn, progress: RichProgress | None = None, engine=None) -> Any:
    """Runs an engine call and turns every expected failure into the one error report and an
    exit code: 1 for a failure, 2 for a name that is not a cluster name, 130/143 for Ctrl-C/SIGTERM."""
    from kubitect_core.config import ConfigError
    from kubitect_core.engine import ChangesRefused, EngineError, StageFailed, Terminated
    from kubitect_core.kubeconfig import KubeconfigError
    from kubitect_core.legacy import LegacyClusterError
    from kubitect_core.paths import ClusterNameError
    from kubitect_core.stage import StageError
    from kubitect_core.state import StateError

    def log() -> Path | None:
        path = getattr(engine, "log_path", None)
        return path if path is not None and path.exists() else None

    try:
        return fn()
    except ConfigError as exc:
        source = next((i.file for i in exc.issues if i.file), None)
        raise fail(config_failure(exc.issues, source)) from None
    except ChangesRefused as exc:
        if not output.machine():  # the refused ones are the boxes below; the rest is context
            _print_events([e for e in exc.events if e.severity != "error"])
        refused = [Problem(f"{e.describe()}" + (f": {e.message}" if e.message else ""), e.path)
                   for e in exc.events if e.severity == "error"]
        raise fail(Failure("changes", str(exc), refused,
                           extra={"changes": [_event_data(e) for e in exc.events]})) from None
    except StageFailed as exc:
        if debug_enabled() and exc.__cause__ is not None and not output.machine():
            err_console.print("".join(traceback.format_exception(exc.__cause__)), markup=False, soft_wrap=True)
        shown = progress is not None and progress.failed  # the cause is on screen already, once
        summary = f"stage '{exc.stage}' failed during {exc.action} (the cause is shown above)" if shown else str(exc)
        raise fail(Failure("stage", summary, log=log(), extra={"stage": exc.stage, "action": exc.action,
                                                              "detail": exc.detail})) from None
    except ClusterNameError as exc:
        raise fail(Failure("usage", str(exc), exit_code=EXIT_USAGE)) from None
    except (StateError, LegacyClusterError, KubeconfigError) as exc:
        raise fail(Failure("state", str(exc), log=log())) from None
    except (EngineError, StageError) as exc:
        raise fail(Failure("error", str(exc), log=log())) from None
    except Terminated:
        raise fail(Failure("interrupted", "Terminated. Re-run the same command: it continues where it stopped.",
                           title="Terminated", exit_code=EXIT_TERMINATED, log=log())) from None
    except KeyboardInterrupt:
        raise fail(Failure("interrupted", "Interrupted. Re-run the same command: it continues where it stopped.",
                           title="Interrupted", exit_code=EXIT_INTERRUPTED, log=log())) from None


def _print_events(events, out=None) -> None:
    out = out or console
    colours = {"error": "red", "warn": "yellow", "allow": "green"}
    for e in events:
        text = f"[{colours[e.severity]}]{e.severity:5}[/{colours[e.severity]}] {escape(e.describe())}"
        out.print(text + (f"\n        {escape(e.message)}" if e.message else ""), soft_wrap=True)


def _result(command: str, outcome, engine, **extra: Any) -> None:
    """The closing event of a pipeline command under -o json|yaml."""
    log = engine.log_path if engine.log_path is not None and engine.log_path.exists() else None
    output.emit(output.event("result", command=command, cluster=outcome.cluster, ok=True,
                             stages=[{"stage": s, "seconds": round(t, 3), "changes": _counts(ch)}
                                     for s, t, ch in outcome.stages],
                             skipped=outcome.skipped, log=str(log) if log else None, **extra))


def _counts(changes) -> dict[str, int]:
    """{"create": 2, "keep": 5}: a stage's changes by action (each is in its stage_finished event)."""
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    return counts


def _pending(outcome) -> int:
    """What apply would change: config changes since the last apply, and every stage's non-keep change."""
    return len(outcome.events) + sum(1 for _, _, ch in outcome.stages for c in ch if c.action != "keep")


CHAOS_CASES = ("host",)
HOST_FAULTS = ("power", "uplink")


def _confirm_chaos(chaos: str, host_fault: str, cluster: str, yes: bool) -> None:
    """Destructive cases run only when asked for and confirmed: a prompt, or --yes without a TTY."""
    unknown = [c for c in chaos.split(",") if c not in CHAOS_CASES]
    if unknown or host_fault not in HOST_FAULTS:
        raise fail(Failure("usage", f"--chaos takes {', '.join(CHAOS_CASES)}; --host-fault takes "
                           f"{', '.join(HOST_FAULTS)}", exit_code=EXIT_USAGE))
    from kubitect_core.lab import MARKER_ENV

    if host_fault == "uplink" and not os.environ.get(MARKER_ENV):
        raise fail(Failure("usage", "--host-fault uplink pulls a simulated host's cable at a lab's switch: run it "
                           "inside a lab that simulates the hosts (kubitect lab up NAME --config FILE, then "
                           "kubitect lab exec NAME -- kubitect verify ...). On real hosts use --host-fault power.",
                           exit_code=EXIT_USAGE, title="Refused"))
    what = {"power": "destroys every VM on the VIP holder's host at once (a power cut); they stay off until "
                     "`kubitect apply --reconcile`",
            "uplink": "cuts the VIP holder's host off the network for a few seconds (lab only)"}[host_fault]
    if yes:
        return
    if not is_interactive():
        raise fail(Failure("usage", f"verify --chaos host {what}. Without a terminal to ask on, pass "
                           "--auto-approve (or --yes).",
                           exit_code=EXIT_USAGE, title="Refused"))
    if not typer.confirm(f"verify --chaos host on cluster '{cluster}' {what}. Continue?", default=False):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Adds the pipeline commands and their list/export subcommands."""

    @app.command(epilog="Example: kubitect apply --config ha.yaml\n\n"
                 "Upgrade (after changing kubernetes.version): "
                 "kubitect apply --config ha.yaml --action upgrade --max-unavailable 2")
    def apply(
        config_arg: Path = typer.Argument(None, metavar="[CONFIG]", help="Config file (or use --config)."),
        config: Path = typer.Option(None, "--config", "-c", help="Config file."),
        action: str = typer.Option("create", "--action", "-a", help=ACTION_HELP, autocompletion=values.actions),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Answer yes to every prompt "
                                          "(needed without a terminal when data would be deleted)."),
        reconcile: bool = typer.Option(False, "--reconcile", help="Re-converge every stage even when the "
                                       "config is unchanged (repairs drift)."),
        allow_unverified: bool = typer.Option(False, "--allow-unverified-image", help="Use a base image "
                                              "whose checksum is not published (loudly; never the default)."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        kubeconfig_name: str = typer.Option(None, "--kubeconfig-name", help=KUBECONFIG_NAME_HELP),
        delete_data_disks: bool = typer.Option(False, "--delete-data-disks", help=DELETE_DATA_DISKS_HELP),
        drain_timeout: float = typer.Option(None, "--drain-timeout", min=1, help=DRAIN_TIMEOUT_HELP),
        max_unavailable: int = typer.Option(None, "--max-unavailable", min=1, help=MAX_UNAVAILABLE_HELP),
        walk_minors: bool = typer.Option(False, "--walk-minors", help=WALK_MINORS_HELP),
        local: bool = local_option(),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Create, modify, scale or upgrade a cluster so that it matches the config."""
        from kubitect_core.engine import Options, run_sync

        path = _config_path(config, config_arg)
        _check_action(action)
        engine, progress = _engine(resolve_home(home, local=local), auto_approve=auto_approve, local=local)
        opts = Options(action=action, auto_approve=auto_approve, reconcile=reconcile, wait_lock=wait_lock,
                       flags=_image_flags(allow_unverified) | _kubeconfig_flags(kubeconfig_name)
                       | _scale_in_flags(delete_data_disks, drain_timeout)
                       | _upgrade_flags(action, max_unavailable, walk_minors))

        def go():
            cfg = engine.read(path)  # read once: these bytes are validated, applied and stored
            _event_log(engine, cfg.cluster)
            return run_sync(engine.apply(cfg, opts))

        outcome = _handle(go, progress, engine)
        if output.machine():
            _result("apply", outcome, engine, nothing_to_do=outcome.nothing_to_do, message=outcome.message or None)
            return
        if outcome.nothing_to_do:
            console.print(escape(outcome.message))
        elif progress:
            progress.summary(f"Cluster '{outcome.cluster}' applied")
        for stage_name, reason in outcome.skipped.items():
            console.print(f"[yellow]Stage '{stage_name}' was skipped: {escape(reason)}[/yellow]\n"
                          "The config is not marked as applied: run apply again once that is resolved.",
                          soft_wrap=True)

    @app.command(epilog="Example: kubitect plan --config ha.yaml --detailed-exitcode")
    def plan(
        config_arg: Path = typer.Argument(None, metavar="[CONFIG]", help="Config file (or use --config)."),
        config: Path = typer.Option(None, "--config", "-c", help="Config file."),
        action: str = typer.Option("create", "--action", "-a", help=ACTION_HELP, autocompletion=values.actions),
        detailed_exitcode: bool = typer.Option(
            False, "--detailed-exitcode", help="Exit 0 when nothing would change, 2 when changes are pending, "
            "1 on an error (as Terraform's plan, for CI)."),
        local: bool = local_option(),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Show what apply would create, change or delete, stage by stage. Touches nothing."""
        from kubitect_core.confirmation import data_loss
        from kubitect_core.engine import Options, run_sync

        path = _config_path(config, config_arg)
        _check_action(action)
        engine, progress = _engine(resolve_home(home, local=local), auto_approve=True, local=local)
        outcome = _handle(lambda: run_sync(engine.plan(path, Options(action=action))), progress, engine)
        pending = _pending(outcome)
        loss = data_loss(outcome.events, outcome.cluster) if outcome.events else []
        if output.machine():
            output.emit(output.event(
                "plan", cluster=outcome.cluster, changes_pending=pending > 0, pending=pending,
                config_changes=[_event_data(e) for e in outcome.events], data_loss=loss,
                stages=[{"stage": s, "changes": [change_data(c) for c in ch]} for s, _, ch in outcome.stages]))
        else:
            if outcome.events:
                console.print("[bold]Config changes since the last apply:[/bold]")
                _print_events(outcome.events)
                for line in loss:
                    console.print(f"[bold red]data loss:[/bold red] [red]{escape(line)}[/red]", soft_wrap=True)
            total = sum(1 for _, _, ch in outcome.stages for c in ch if c.action != "keep")
            console.print(f"Plan: {total} change(s) across {len(outcome.stages)} stages.")
        if detailed_exitcode and pending:
            raise typer.Exit(EXIT_CHANGES_PENDING)

    @app.command(epilog="Example: kubitect run --stage network --stage storage --stage vms ha.yaml")
    def run(
        config_arg: Path = typer.Argument(None, metavar="[CONFIG]", help="Config file (or use --config)."),
        config: Path = typer.Option(None, "--config", "-c", help="Config file."),
        stage: list[str] = typer.Option(..., "--stage", "-s", help="Stage to run (repeatable).",
                                        autocompletion=values.stages),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Answer yes to every prompt."),
        allow_unverified: bool = typer.Option(False, "--allow-unverified-image", help="Use a base image "
                                              "whose checksum is not published (loudly; never the default)."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        kubeconfig_name: str = typer.Option(None, "--kubeconfig-name", help=KUBECONFIG_NAME_HELP),
        delete_data_disks: bool = typer.Option(False, "--delete-data-disks", help=DELETE_DATA_DISKS_HELP),
        drain_timeout: float = typer.Option(None, "--drain-timeout", min=1, help=DRAIN_TIMEOUT_HELP),
        local: bool = local_option(),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Run validate plus the named stages of the pipeline (each must have its prerequisites)."""
        from kubitect_core.engine import Options, run_sync

        path = _config_path(config, config_arg)
        engine, progress = _engine(resolve_home(home, local=local), auto_approve=auto_approve, local=local)
        opts = Options(auto_approve=auto_approve, wait_lock=wait_lock,
                       flags=_image_flags(allow_unverified) | _kubeconfig_flags(kubeconfig_name)
                       | _scale_in_flags(delete_data_disks, drain_timeout))

        def go():
            cfg = engine.read(path)
            _event_log(engine, cfg.cluster)
            return run_sync(engine.run_stages(cfg, stage, opts))

        outcome = _handle(go, progress, engine)
        if output.machine():
            _result("run", outcome, engine)
        elif progress:
            progress.summary(f"Cluster '{outcome.cluster}': stages {', '.join(stage)}")

    @app.command(epilog="Example: kubitect destroy --cluster kubitect-ha --auto-approve")
    def destroy(
        cluster: str = cluster_option("Name of the cluster to destroy."),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Do not ask for confirmation "
                                          "(required without a terminal)."),
        force: bool = typer.Option(False, "--force", help="Finish even if a host is gone for good: remove "
                                   "what can be removed and list the rest."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Destroy a cluster: every stage's layer in reverse order, then its directory."""
        from kubitect_core.engine import Options, run_sync

        engine, progress = _engine(resolve_home(home, cluster=cluster), auto_approve=auto_approve,
                                   local=cluster.startswith("local-") and not home)
        outcome = _handle(lambda: run_sync(engine.destroy(cluster, Options(wait_lock=wait_lock, force=force))),
                          progress, engine)
        message = outcome.message or f"Cluster '{cluster}' has been destroyed."
        if output.machine():
            _result("destroy", outcome, engine, message=message, notes=outcome.notes, leftovers=outcome.leftovers)
            return
        for note in outcome.notes:
            console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
        if outcome.leftovers:
            console.print("[bold red]Not removed[/bold red] (--force; remove these by hand if the host comes back):")
            for line in outcome.leftovers:
                console.print(f"  - {escape(line)}", soft_wrap=True)
        console.print(escape(message))

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
        yes: bool = typer.Option(False, "--auto-approve", "--yes", "-y",
                                  help="Do not ask before a destructive case."),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Run the conformance suite (testinfra) against a live cluster and report measured figures."""
        from kubitect_core.engine import Options, run_sync

        if chaos is not None:
            _confirm_chaos(chaos, host_fault, cluster, yes)
        engine, progress = _engine(resolve_home(home, cluster=cluster), auto_approve=True,
                                   local=cluster.startswith("local-") and not home)
        flags = {"failover": failover, "junit": str(junit) if junit else None,
                 "report": str(report) if report else None, "failover_vantage": vantage,
                 "failover_margin": margin, "checks": checks,
                 "chaos": chaos, "host_fault": host_fault if chaos else None}

        def go():
            _event_log(engine, cluster)
            return run_sync(engine.verify(cluster, Options(flags=flags)))

        outcome = _handle(go, progress, engine)
        if output.machine():
            _result("verify", outcome, engine)
        elif progress:
            progress.summary(f"Cluster '{outcome.cluster}' verified")

    @list_app.command("clusters", epilog="Example: kubitect list clusters -o json")
    def list_clusters(home: str = home_option(), fmt: output.Format = output_option()) -> None:
        """List the clusters in the kubitect home (and ./.kubitect), with the state of their last run.

        A damaged cluster is marked as such (naming the file) and the others are still listed;
        a cluster directory made by Kubitect (Go) is shown as such; clusters made with --local
        (in ./.kubitect of this directory) are marked local.
        """
        from kubitect_core.listing import cluster_rows

        rows = [{**r, "local": False} for r in cluster_rows(resolve_home(home))]
        if not home and local_home().is_dir() and local_home() != resolve_home(None):
            rows += [{**r, "local": True} for r in cluster_rows(local_home())]
        if output.machine():
            output.document(output.listing("cluster-list", rows))
            return
        if not rows:
            console.print("No clusters yet. Run 'kubitect apply --config FILE' to create one.")
            return
        table = Table("cluster", "made by", "status", "directory")
        for r in rows:
            colour = "red" if r["damaged"] else "yellow" if r["made_by"] != "kubitect" else None
            status = f"[{colour}]{escape(r['status'])}[/{colour}]" if colour else escape(r["status"])
            table.add_row(escape(r["name"]) + (" (local)" if r["local"] else ""), escape(r["made_by"]), status,
                          escape(r["dir"]))
        console.print(table)

    list_app.command("cluster", hidden=True)(list_clusters)  # Kubitect's alias

    @list_app.command("plugins", epilog="Example: kubitect list plugins")
    def list_plugins(fmt: output.Format = output_option()) -> None:
        """List installed plugins (built-in and third-party) and what each provides."""
        from kubitect_core.plugins import load_registry

        registry = load_registry()
        if output.machine():
            output.document(output.listing("plugin-list", [
                {"name": i.name, "source": i.source, "provides": list(i.provides), "error": i.error}
                for i in registry.plugins]))
            return
        table = Table("plugin", "source", "provides")
        for info in registry.plugins:
            provides = f"[red]failed to load: {escape(info.error)}[/red]" if info.error else \
                escape(", ".join(info.provides) or "-")
            table.add_row(escape(info.name), escape(info.source), provides)
        console.print(table)

    @list_app.command("stages", epilog="Example: kubitect list stages")
    def list_stages(fmt: output.Format = output_option()) -> None:
        """List the pipeline's stages in order, with what each needs."""
        registry = _registry()
        if output.machine():
            output.document(output.listing("stage-list", [
                {"order": i, "name": s.name, "requires": list(s.requires), "description": s.description}
                for i, s in enumerate(registry.stages, 1)]))
            return
        table = Table("#", "stage", "requires", "what it does")
        for i, s in enumerate(registry.stages, 1):
            table.add_row(str(i), escape(s.name), escape(", ".join(s.requires) or "-"), escape(s.description))
        console.print(table)

    @export_app.command("config", epilog="Example: kubitect export config --cluster kubitect-ha")
    def export_config(cluster: str = cluster_option(), fmt: output.Format = output_option(
                          "text or yaml (the file as written) or json (the same data as JSON)."),
                      home: str = home_option()) -> None:
        """Print the cluster's last applied config (as written by the user)."""
        from kubitect_core.listing import exported_config

        _export_yaml(_handle(lambda: exported_config(resolve_home(home, cluster=cluster), cluster)), "config")

    @export_app.command("kubeconfig", epilog="Example: kubitect export kubeconfig --cluster kubitect-ha")
    def export_kubeconfig(cluster: str = cluster_option(), fmt: output.Format = output_option(
                              "text or yaml (the file) or json (as kubectl config view -o json)."),
                          home: str = home_option()) -> None:
        """Print the cluster's admin kubeconfig."""
        from kubitect_core.listing import exported_kubeconfig

        _export_yaml(_handle(lambda: exported_kubeconfig(resolve_home(home, cluster=cluster), cluster)),
                     "kubeconfig")


def _export_yaml(text: str, what: str) -> None:
    """A stored YAML file as it is (text, yaml) or as JSON data (json)."""
    if output.current() is output.Format.json:
        from kubitect_core.config import ConfigError, parse_yaml

        try:
            data = parse_yaml(text, what)
        except ConfigError as exc:
            raise fail(Failure("state", f"the stored {what} is not valid YAML: {exc}")) from None
        output.document(data)
        return
    typer.echo(text, nl=False)


DELETE_DATA_DISKS_HELP = ("Delete the data disks of nodes removed from the config (-y alone does not; "
                          "without a terminal this flag is the only yes).")
DRAIN_TIMEOUT_HELP = "Seconds a removed node's drain may take before the apply stops (default 300)."


def _scale_in_flags(delete_data_disks: bool, drain_timeout: float | None) -> dict[str, Any]:
    flags: dict[str, Any] = {"delete_data_disks": True} if delete_data_disks else {}
    if drain_timeout:
        flags["drain_timeout"] = drain_timeout
    return flags


MAX_UNAVAILABLE_HELP = ("With --action upgrade: how many workers are drained and upgraded at once "
                        "(control planes always go one at a time). Default 1.")
WALK_MINORS_HELP = ("With --action upgrade: go through every minor version between the running one and "
                    "kubernetes.version, one at a time (otherwise a jump of more than one minor is refused).")


def _upgrade_flags(action: str, max_unavailable: int | None, walk: bool) -> dict[str, Any]:
    """The rolling-upgrade options, refused with any other action (they would silently do nothing)."""
    if action != "upgrade" and (max_unavailable is not None or walk):
        given = "--max-unavailable" if max_unavailable is not None else "--walk-minors"
        raise typer.BadParameter(f"{given} applies only to '--action upgrade'", param_hint=given)
    flags: dict[str, Any] = {}
    if max_unavailable is not None:
        flags["upgrade_max_unavailable"] = max_unavailable
    if walk:
        flags["upgrade_walk"] = True
    return flags


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


@export_app.command("report", epilog="Example: kubitect export report --cluster kubitect-ha -o json")
def export_report(cluster: str = cluster_option(),
                  fmt: output.Format = output_option("text (tables), json or yaml (the report's data)."),
                  home: str = home_option()) -> None:
    """Print the cluster's last conformance report (checks and measured failover gaps)."""
    import json

    from kubitect_core.listing import exported_report

    where = resolve_home(home, cluster=cluster)
    if output.machine():
        output.document(json.loads(_handle(lambda: exported_report(where, cluster, "json"))))
        return
    typer.echo(_handle(lambda: exported_report(where, cluster, "text")))
