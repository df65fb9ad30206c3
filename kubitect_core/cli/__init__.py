"""The `kubitect` command line (typer). Each command group lives in its own module.

Modules register their commands on the shared app through `register(app)`, so the command
groups (config, pipeline, lab, image) stay in separate files owned by separate concerns.
"""

from __future__ import annotations

import typer

from kubitect_core import __version__
from kubitect_core.cli import config_cmds, image_cmds, lab_cmds, pipeline_cmds, topology_cmds
from kubitect_core.cli.groups import export_app, list_app

app = typer.Typer(
    name="kubitect",
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
) -> None:
    """One YAML file in, a highly available Kubernetes cluster on libvirt hosts out."""


app.add_typer(list_app, name="list")
app.add_typer(export_app, name="export")

for _module in (config_cmds, pipeline_cmds, lab_cmds, image_cmds, topology_cmds):
    _module.register(app)


def main() -> None:
    app()
