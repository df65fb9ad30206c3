"""The `kubitect` command line (typer). Each command group lives in its own module.

Modules register their commands on the shared app through `register(app)`, so the command
groups (config, pipeline, lab, image) stay in separate files owned by separate concerns. The
conventions every command shares (output formats, errors, completion, `--debug`, `--local`,
`help`, suggestions) live in `groups`, `output`, `errors` and `completion_cmds`.
"""

# ruff: noqa: E402  (the collector is tuned before the imports below run)
from __future__ import annotations

import gc
import os
import sys
import threading

# Start-up creates ~70,000 tracked objects that live as long as the process (modules, classes,
# the config models' pydantic schemas), and with the default threshold (700) the collector walks
# them again and again while they are made (bench/cli_start_bench.py). Rarer young collections
# while the CLI's own imports below run (main() then turns the collector off for start-up, see
# `_collector_off_for_start_up`); every 50,000 allocations still bounds a long `apply`'s memory.
gc.set_threshold(50_000, 20, 10)

import typer
import typer.main

from kubitect_core import __version__
from kubitect_core.cli import (
    access_cmds,
    adopt_cmds,
    completion_cmds,
    config_cmds,
    day2_cmds,
    image_cmds,
    lab_cmds,
    logs_cmds,
    pipeline_cmds,
    topology_cmds,
)
from kubitect_core.cli import completion_values as values
from kubitect_core.cli.completion_cmds import COMPLETE_VAR
from kubitect_core.cli.groups import KubitectGroup, _set_debug, export_app, list_app, reset_session

app = typer.Typer(
    name="kubitect",
    cls=KubitectGroup,
    add_completion=False,  # `kubitect completion SHELL` instead of typer's --install-completion
    help="One YAML file in, a highly available Kubernetes cluster on libvirt hosts out.\n\n"
    "Example: kubitect apply --config ha.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kubitect {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-v", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", callback=_set_debug,
                               help="Show every command run on the nodes as it happens (any command)."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour (also: the NO_COLOR variable)."),
) -> None:
    """One YAML file in, a highly available Kubernetes cluster on libvirt hosts out."""
    from kubitect_core import ui

    ui.configure(no_color=no_color)


@app.command("help", epilog="Example: kubitect help export logs")
def help_(
    ctx: typer.Context,
    command: list[str] = typer.Argument(None, metavar="[COMMAND]...", autocompletion=values.commands,
                                        help="The command to explain (e.g. apply, or export config)."),
) -> None:
    """Show the help of a command: `kubitect help apply` is `kubitect apply --help`."""
    root = ctx.find_root()
    code = root.command.main(args=[*(command or []), "--help"], prog_name=root.info_name, standalone_mode=False)
    raise typer.Exit(code or 0)


app.add_typer(list_app, name="list")
app.add_typer(list_app, name="ls", hidden=True)  # Kubitect's alias
app.add_typer(export_app, name="export")

for _module in (config_cmds, pipeline_cmds, adopt_cmds, logs_cmds, access_cmds, lab_cmds, image_cmds,
                topology_cmds, completion_cmds, day2_cmds):
    _module.register(app)


def _asked_for(argv: list[str]) -> tuple[list, list] | None:
    """The registered commands and groups this call needs built, or None for all of them.

    typer turns every registered command into a click command (signatures, type hints, help) on
    each start, ~30 ms for all of kubitect's; a call naming one command or group needs only that
    one. Everything that looks at the whole tree gets it: `help`, shell completion, a root option
    before the command (`--help`), a word that names nothing (the suggestions), no word at all.
    `--version` exits in the root's callback, before any command is looked up.
    """
    if not argv or os.environ.get(COMPLETE_VAR):
        return None
    word = argv[0]
    if word in ("--version", "-v"):
        return [], []
    if word == "help":
        return None
    commands = [c for c in app.registered_commands
                if (c.name or typer.main.get_command_name(c.callback.__name__)) == word]
    groups = [g for g in app.registered_groups if g.name == word]
    return (commands, groups) if commands or groups else None


GC_OFF_FOR_S = 2.0


def _collector_off_for_start_up() -> None:
    """No cyclic garbage collection for the process's first seconds, then the usual.

    Even every 50,000 allocations the collector still visits each object start-up makes (imports,
    the plugin registry, the config models' validators): ~15% of `validate` again
    (bench/cli_start_bench.py). A quick command is over before the timer fires; a long one gets
    the collector back two seconds in. Left alone when something already turned it off.
    """
    if not gc.isenabled():
        return
    gc.disable()
    timer = threading.Timer(GC_OFF_FOR_S, gc.enable)
    timer.daemon = True
    timer.start()


def main() -> None:
    _collector_off_for_start_up()
    reset_session()
    only = _asked_for(sys.argv[1:])
    if only is None:
        app()
        return
    everything = app.registered_commands, app.registered_groups
    app.registered_commands, app.registered_groups = only
    try:
        app()
    finally:  # an in-process caller (a test) calling main() again gets the whole tree back
        app.registered_commands, app.registered_groups = everything
