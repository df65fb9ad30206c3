"""Command groups and the options several command modules share (`--cluster`, `--home`, `--local`,
`-o`, `--debug`), and the root group's conventions: a suggestion for a command Kubitect users
type (`create`, `delete`), usage errors as events under `-o json`, `--detailed-exitcode`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from kubitect_core.cli import completion_values as values
from kubitect_core.cli import output

EXIT_USAGE = 2
HOME_HELP = "Kubitect home (default: $KUBITECT_HOME or ~/.kubitect)."
LOCAL_HELP = ("Keep the cluster in ./.kubitect (the project directory) instead of the kubitect home, "
              "named local-<name> (Kubitect's --local).")
LOCAL_PREFIX = "local-"
LOCAL_HOME = ".kubitect"

# What Kubitect users (and users of other tools) type, and the command that does it here.
SYNONYMS = {
    "create": "apply", "deploy": "apply", "install": "apply", "up": "apply",
    "scale": "apply --action scale", "upgrade": "apply --action upgrade",
    "delete": "destroy", "del": "destroy", "remove": "destroy", "rm": "destroy", "down": "destroy",
    "check": "verify", "test": "verify", "show": "export", "get": "list", "dump": "export",
}

_session: dict[str, Any] = {"debug": False}


# --------------------------------------------------------------------------- session flags


def debug_enabled() -> bool:
    return bool(_session["debug"]) or os.environ.get("KUBITECT_DEBUG", "") not in ("", "0")


def _set_debug(value: bool) -> bool:
    if value:
        _session["debug"] = True
    return value


def reset_session() -> None:
    """Forgets the previous command's flags (tests run many commands in one process)."""
    from kubitect_core import ui

    _session["debug"] = False
    output.reset()
    ui.configure()


# --------------------------------------------------------------------------- shared options


def _cluster_name(value: str) -> str:
    """Applies the `cluster.name` rule before any command turns the name into a path (exit 2)."""
    from kubitect_core.paths import ClusterNameError, check_cluster_name

    try:
        return check_cluster_name(value)
    except ClusterNameError as exc:
        raise typer.BadParameter(str(exc)) from None


def cluster_option(help: str = "Cluster name.") -> Any:
    """`--cluster NAME`, checked with the config's cluster-name rule (a name, never a path);
    completed from the clusters in the home (and ./.kubitect)."""
    return typer.Option(..., "--cluster", help=help, callback=_cluster_name, autocompletion=values.clusters)


def home_option() -> Any:
    return typer.Option(None, "--home", help=HOME_HELP)


def local_option() -> Any:
    return typer.Option(False, "--local", "-l", help=LOCAL_HELP)


def debug_option() -> Any:
    return typer.Option(False, "--debug", callback=_set_debug, is_eager=True,
                        help="Show every command run on the nodes, with its output, as it happens "
                             "(the run log is written either way).")


def output_option(help: str = "text, json or yaml (json/yaml: events on stdout, docs/events.md).") -> Any:
    return output.format_option(help)


def local_home() -> Path:
    return Path.cwd() / LOCAL_HOME


def resolve_home(home: str | None, *, local: bool = False, cluster: str | None = None) -> Path:
    """Where a command's cluster lives: --home; else ./.kubitect for --local and for a cluster
    named local-*; else $KUBITECT_HOME or ~/.kubitect."""
    from kubitect_core.paths import kubitect_home

    if home and local:
        raise typer.BadParameter("give either --home DIR or --local (which means ./.kubitect), not both",
                                 param_hint="--local")
    if home:
        return kubitect_home(home)
    if local or (cluster or "").startswith(LOCAL_PREFIX):
        return local_home()
    return kubitect_home(None)


# --------------------------------------------------------------------------- the root group


def suggestion(word: str) -> str | None:
    """The command to use instead of an unknown one, for words users of other tools type."""
    return SYNONYMS.get(word.lower())


class KubitectGroup(TyperGroup):
    """The root `kubitect` group: typer's group plus the conventions in the module docstring."""

    def resolve_command(self, ctx, args):
        """typer's, with suggestions among visible commands only, and at the root the commands
        Kubitect users type (`create` -> apply, `delete` -> destroy)."""
        from difflib import get_close_matches

        from typer._click.exceptions import UsageError

        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            if not args:
                raise
            better = suggestion(args[0]) if ctx.parent is None else None
            visible = [name for name, cmd in self.commands.items() if not cmd.hidden]
            if better:
                exc.message = f"No such command '{args[0]}'. Did you mean 'kubitect {better}'?"
            elif matches := get_close_matches(args[0], visible):
                exc.message = f"No such command '{args[0]}'. Did you mean {' or '.join(repr(m) for m in matches)}?"
            raise

    def _main_shell_completion(self, ctx_args, prog_name, complete_var=None):
        from kubitect_core.cli.completion_cmds import COMPLETE_VAR, install_shell_classes

        install_shell_classes()
        return super()._main_shell_completion(ctx_args, prog_name, complete_var or COMPLETE_VAR)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        reset_session()
        from typer import Abort
        from typer._click.exceptions import ClickException

        try:
            rv = super().main(argv, prog_name or "kubitect", complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            sys.exit(_usage_error(exc, argv))
        except Abort:
            sys.exit(_usage_error(None, argv))
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_error(exc: Any, argv: list[str]) -> int:
    """Shows a usage error as typer does, or as an `error` event under -o json|yaml; returns the
    exit code (2; 1 under --detailed-exitcode, whose 2 means "changes pending")."""
    from typer._click.exceptions import NoArgsIsHelpError

    from kubitect_core.cli.errors import Failure, render

    code = exc.exit_code if exc is not None else 1
    if code == EXIT_USAGE and "--detailed-exitcode" in argv:
        code = 1
    if isinstance(exc, NoArgsIsHelpError):  # `kubitect` alone, `kubitect list`: the help is the answer
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        return code
    output.set_format(output.argv_format(argv))
    message = exc.format_message() if exc is not None else "Aborted."
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and not output.machine():
        from kubitect_core.ui import err_console

        hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help." if ctx.help_option_names else ""
        err_console.print(f"{ctx.get_usage()}\n{hint}".rstrip(), markup=False, highlight=False)
    render(Failure(kind="usage", summary=message, exit_code=code))
    return code


list_app = typer.Typer(cls=KubitectGroup, no_args_is_help=True,
                       help="List clusters, presets, plugins or stages.\n\nExample: kubitect list clusters")
export_app = typer.Typer(cls=KubitectGroup, no_args_is_help=True,
                         help="Print a cluster's config, kubeconfig, report or logs, or a preset.\n\n"
                         "Example: kubitect export preset --name minimal")
