"""`kubitect topology`: what a config will build, drawn from the config alone (no host contacted).

A tree in the terminal by default; `--svg`/`--png` write the picture; `-o json|yaml` print the
same data for scripts. Data goes to stdout, notes ("wrote ...") and errors to stderr, so
`kubitect topology ha.yaml -o json --svg ha.svg | jq` stays valid JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement

from kubitect_core.cli.config_cmds import load_or_fail, resolve_config_arg
from kubitect_core.cli.errors import Failure, fail
from kubitect_core.cli.groups import output_option
from kubitect_core.cli.output import Format as Output


def _err() -> Console:
    from kubitect_core.ui import err_console

    return err_console


def topology(
    file: Path | None = typer.Argument(None, metavar="CONFIG", help="Config file (same as --config)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file to draw."),
    svg: Path | None = typer.Option(None, "--svg", metavar="FILE", help="Write the picture as SVG to FILE."),
    png: Path | None = typer.Option(
        None, "--png", metavar="FILE", help="Write the picture as PNG to FILE (needs Debian's `chromium`)."),
    scale: float = typer.Option(1.0, "--scale", min=0.5, max=4.0,
                                help="Pixels per SVG unit in the PNG (2 for high-density screens)."),
    fmt: Output = output_option("text (a tree; not printed when --svg/--png is given), json or yaml."),
) -> None:
    """Draw the hosts, nodes, network, VIP and data disks a config describes, with per-host totals.

    Drawn from the config alone (no host is contacted): each node with its role, address (or DHCP),
    resources and data disks; each host with the vCPUs, RAM and disk per pool of its nodes.

    Example: kubitect topology --config ha.yaml --svg ha.svg --png ha.png
    """
    from kubitect_core.topology_view import PngError, build_tree, build_view, compute_layout, render_svg, svg_to_png

    if config is None and file is None:  # the shared helper's message names `validate`
        raise typer.BadParameter("no config file given; use --config FILE (e.g. kubitect topology --config "
                                 "ha.yaml).", param_hint="--config")
    path = resolve_config_arg(config, file)
    loaded = load_or_fail(path)
    view = build_view(loaded)
    if fmt is Output.json:
        typer.echo(json.dumps(view.to_dict(), indent=2))
    elif fmt is Output.yaml:
        import yaml

        typer.echo(yaml.safe_dump(view.to_dict(), sort_keys=False, allow_unicode=True), nl=False)
    elif not (svg or png):
        _print_tree(build_tree(view))
    if not (svg or png):
        return
    layout = compute_layout(view)
    picture = render_svg(view, layout)
    try:
        if svg:
            svg.write_text(picture, encoding="utf-8")
            _note(f"[green]✓[/green] wrote {escape(str(svg))} ({layout.width}×{layout.height} px)")
        if png:
            svg_to_png(picture, layout.width, layout.height, png, scale=scale)
            _note(f"[green]✓[/green] wrote {escape(str(png))} "
                  f"({round(layout.width * scale)}×{round(layout.height * scale)} px)")
    except OSError as exc:
        raise fail(Failure("error", f"cannot write {exc.filename or ''}: {exc.strerror or exc}")) from None
    except PngError as exc:
        raise fail(Failure("error", str(exc))) from None


def _note(text: str) -> None:
    """"wrote FILE" on stderr, for people; stdout holds the data, which -o json keeps pure."""
    _err().print(text)


def _print_tree(tree) -> None:
    """On a terminal, wrapped to its width; piped, at the tree's natural width (no hard wrapping)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        width = Measurement.get(console, console.options.update(width=100_000), tree).maximum
        console = Console(highlight=False, width=max(width, 20))
    console.print(tree)


def register(app: typer.Typer) -> None:
    """Adds `topology` to the root app."""
    app.command("topology")(topology)
