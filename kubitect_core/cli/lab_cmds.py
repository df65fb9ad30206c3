"""`kubitect lab up|exec|down|status`: an isolated network namespace to run kubitect in.

Everything kubitect creates on the network (bridges, addresses, libvirt's rules) stays inside
the lab namespace; `down` removes it all, also after a crashed run.
"""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.table import Table

from kubitect_core.lab import harness

console = Console(highlight=False)
PREFIX_HELP = "Namespace name prefix of the labs this command manages."

lab_app = typer.Typer(
    help="Isolated lab namespaces (optionally with libvirtd inside) for demos and tests.\n\n"
    "Example: kubitect lab up demo --libvirt && kubitect lab exec demo -- kubitect apply -c ha.yaml",
    no_args_is_help=True,
)


def _need_root() -> None:
    if os.geteuid() != 0:
        console.print("[red]error:[/red] labs need root (network namespaces).")
        raise typer.Exit(2)


@lab_app.command("up", epilog="Example: kubitect lab up demo --libvirt")
def up(
    name: str = typer.Argument("main", help="Lab name (namespace <prefix><name>)."),
    libvirt: bool = typer.Option(False, "--libvirt", help="Also start virtlogd and libvirtd inside."),
    prefix: str = typer.Option(harness.DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
) -> None:
    """Create the lab afresh (any leftover of the same name is removed first)."""
    _need_root()
    try:
        st = harness.lab_up(name, libvirt=libvirt, prefix=prefix)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    extra = f", libvirtd pid {st.daemons.get('libvirtd')}" if libvirt else ""
    console.print(f"[green]✔[/green] lab {st.namespace} up in {st.info.get('up_seconds')} s{extra}")
    console.print(f"  run in it:  kubitect lab exec {name} -- COMMAND ...")
    console.print(f"  remove it:  kubitect lab down {name}")


@lab_app.command("exec", epilog="Example: kubitect lab exec demo -- kubitect apply --config lab.yaml",
                 context_settings={"ignore_unknown_options": True})
def exec_(
    name: str = typer.Argument(..., help="Lab name."),
    command: list[str] = typer.Argument(..., help="The command (after --)."),
    prefix: str = typer.Option(harness.DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
) -> None:
    """Run COMMAND inside the lab namespace (marked as a lab process); exits with its status."""
    _need_root()
    ns = harness.namespace_name(name, prefix)
    if not harness.netns.exists(ns):
        console.print(f"[red]error:[/red] no lab {ns}: run  kubitect lab up {name}")
        raise typer.Exit(1)
    argv = harness.netns.exec_argv(ns, command)
    os.execvpe(argv[0], argv, harness.lab_env(ns))


@lab_app.command("down", epilog="Example: kubitect lab down demo")
def down(
    name: str = typer.Argument(None, help="Lab name (omit with --all)."),
    all_: bool = typer.Option(False, "--all", help="Remove every lab with the prefix."),
    prefix: str = typer.Option(harness.DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
) -> None:
    """Remove a lab (or all): stop its processes by PID, delete its namespace. Idempotent."""
    _need_root()
    if bool(name) == all_:
        console.print("[red]error:[/red] name one lab, or pass --all")
        raise typer.Exit(2)
    if all_:
        done = harness.lab_down_all(prefix=prefix)
        for ns, pids in done.items():
            console.print(f"[green]✔[/green] {ns}: removed, {len(pids)} processes stopped")
        if not done:
            console.print(f"no {prefix}* labs")
        return
    pids = harness.lab_down(name, prefix=prefix)
    console.print(f"[green]✔[/green] lab {harness.namespace_name(name, prefix)} removed, "
                  f"{len(pids)} processes stopped")


@lab_app.command("status", epilog="Example: kubitect lab status")
def status(prefix: str = typer.Option(harness.DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP)) -> None:
    """List the labs, their processes and daemons."""
    labs = harness.lab_status(prefix)
    if not labs:
        console.print(f"no {prefix}* labs")
        return
    table = Table("namespace", "exists", "processes", "daemons")
    for st in labs:
        daemons = ", ".join(f"{d} {pid or 'dead'}" for d, pid in st.daemons.items()) or "-"
        table.add_row(st.namespace, "yes" if st.exists else "no (leftover state)",
                      str(len(st.pids)), daemons)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Adds `kubitect lab ...` to the root app."""
    app.add_typer(lab_app, name="lab")
