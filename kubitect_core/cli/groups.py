"""Command groups and options shared by several command modules (`kubitect list ...`, `--cluster`)."""

import typer

list_app = typer.Typer(help="List clusters, presets, plugins or stages.\n\nExample: kubitect list clusters",
                       no_args_is_help=True)
export_app = typer.Typer(help="Print a cluster's config or kubeconfig, or a preset.\n\n"
                         "Example: kubitect export preset --name minimal", no_args_is_help=True)

EXIT_USAGE = 2


def _cluster_name(value: str) -> str:
    """Applies the `cluster.name` rule before any command turns the name into a path (exit 2)."""
    from kubitect_core.paths import ClusterNameError, check_cluster_name

    try:
        return check_cluster_name(value)
    except ClusterNameError as exc:
        raise typer.BadParameter(str(exc)) from None


def cluster_option(help: str = "Cluster name.") -> str:
    """`--cluster NAME`, checked with the config's cluster-name rule (a name, never a path)."""
    return typer.Option(..., "--cluster", help=help, callback=_cluster_name)
