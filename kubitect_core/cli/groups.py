"""Command groups shared by several command modules (`kubitect list ...`, `kubitect export ...`)."""

import typer

list_app = typer.Typer(help="List clusters, presets, plugins or stages.\n\nExample: kubitect list clusters",
                       no_args_is_help=True)
export_app = typer.Typer(help="Print a cluster's config or kubeconfig, or a preset.\n\n"
                         "Example: kubitect export preset --name minimal", no_args_is_help=True)
