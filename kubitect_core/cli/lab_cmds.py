"""`kubitect lab up|exec|down|status`: an isolated network namespace to run kubitect in.

Everything kubitect creates on the network (bridges, addresses, libvirt's rules) stays inside
the lab namespace; `down` removes it all, also after a crashed run.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


class _Harness:
    """`kubitect_core.lab.harness`, imported when a lab command runs, not when the CLI starts."""

    def __getattr__(self, name: str):
        from kubitect_core.lab import harness as module

        return getattr(module, name)


harness = _Harness()
# The harness's DEFAULT_PREFIX, spelt here so `--help` needs no lab import (a unit test keeps the two equal).
DEFAULT_PREFIX = "kblab-"
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


@lab_app.command("up", epilog="Example: kubitect lab up demo --libvirt\n\n"
                 "Example: kubitect lab up seed --config examples/ha.yaml && "
                 "kubitect lab exec seed -- kubitect apply --config examples/ha.yaml")
def up(
    name: str = typer.Argument("main", help="Lab name (namespace <prefix><name>)."),
    libvirt: bool = typer.Option(False, "--libvirt", help="Also start virtlogd and libvirtd inside."),
    config: Path = typer.Option(None, "--config", "-c", help="Simulate this config's hosts: one host "
                                "(own namespace, bridge, sshd, libvirtd) per entry of hosts:, all on one "
                                "segment with the config's CIDR and gateway."),
    image: Path = typer.Option(None, "--image", help="With --config: the VM image that serves the config's "
                               "distro in the lab (default: kubitect's own Debian image, built when missing)."),
    prefix: str = typer.Option(DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
) -> None:
    """Create the lab afresh (any leftover of the same name is removed first)."""
    _need_root()
    def say(message: str) -> None:
        console.print(f"[dim]{escape(message)}[/dim]")

    from kubitect_core.config import ConfigError

    try:
        st = harness.lab_up(name, libvirt=libvirt, prefix=prefix, config=config, image=image, progress=say)
    except ConfigError as exc:
        for issue in exc.issues:
            where = issue.location if issue.file else str(config)
            console.print(f"[red]error:[/red] {escape(where)}: {escape(issue.path)}: {escape(issue.message)}",
                          soft_wrap=True)
        raise typer.Exit(1) from None
    except (RuntimeError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    extra = f", libvirtd pid {st.daemons.get('libvirtd')}" if libvirt and not config else ""
    console.print(f"[green]✔[/green] lab {st.namespace} up in {st.info.get('up_seconds')} s{extra}")
    if config:
        _print_hosts(st.info)
    console.print(f"  run in it:  kubitect lab exec {name} -- COMMAND ...")
    console.print(f"  remove it:  kubitect lab down {name}")


def _print_hosts(info: dict) -> None:
    plan = info.get("plan", {})
    table = Table("host", "address", "namespace", "libvirtd", title=f"segment {plan.get('cidr')}, gateway "
                  f"{plan.get('gateway')}, workstation {plan.get('workstation_ip')}")
    for name, h in info.get("hosts", {}).items():
        table.add_row(name, h["address"], h["namespace"], str(h.get("daemons", {}).get("libvirtd", "-")))
    console.print(table)
    if info.get("image"):
        console.print(f"  image: {escape(info['image']['distro'])} is served by "
                      f"{escape(info['image']['served_by'])}")
    console.print(f"  lab home (HOME and kubitect home in `lab exec`): {escape(str(info.get('home')))}")


@lab_app.command("exec", epilog="Example: kubitect lab exec demo -- kubitect apply --config lab.yaml",
                 context_settings={"ignore_unknown_options": True})
def exec_(
    name: str = typer.Argument(..., help="Lab name."),
    command: list[str] = typer.Argument(..., help="The command (after --)."),
    host: str = typer.Option(None, "--host", help="Run it on this simulated host instead of the workstation."),
    prefix: str = typer.Option(DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
) -> None:
    """Run COMMAND inside the lab namespace (marked as a lab process); exits with its status.

    In a lab made with --config, HOME and the kubitect home are the lab's own (its keys,
    clusters and images); --host runs the command on one of the simulated hosts.
    """
    _need_root()
    ns = harness.namespace_name(name, prefix)
    if not harness.netns.exists(ns):
        console.print(f"[red]error:[/red] no lab {ns}: run  kubitect lab up {name}")
        raise typer.Exit(1)
    if host:
        hosts = harness.lab_status_of(ns).info.get("hosts", {})
        if host not in hosts:
            console.print(f"[red]error:[/red] lab {ns} has no host {escape(host)!r} "
                          f"(hosts: {', '.join(hosts) or 'none'})")
            raise typer.Exit(1)
        from kubitect_core.lab.hostns import HostNs

        argv = HostNs(hosts[host]["namespace"], hosts[host]["holder"]).argv(command)
    else:
        argv = harness.exec_argv(ns, command)
    os.execvpe(argv[0], argv, harness.lab_env(ns))


@lab_app.command("uplink", epilog="Example: kubitect lab uplink seed host1 --down")
def uplink(
    name: str = typer.Argument(..., help="Lab name."),
    host: str = typer.Argument(..., help="The simulated host."),
    down: bool = typer.Option(False, "--down/--up", help="Pull the host's cable at the switch, or plug it back."),
    prefix: str = typer.Option(DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
) -> None:
    """Cut (or restore) a simulated host's uplink: the host and every VM behind it leave the segment."""
    _need_root()
    ns = harness.namespace_name(name, prefix)
    try:
        harness.set_uplink(ns, host, up=not down)
    except (KeyError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"[green]✔[/green] {host}'s uplink is {'down' if down else 'up'}")


@lab_app.command("down", epilog="Example: kubitect lab down demo")
def down(
    name: str = typer.Argument(None, help="Lab name (omit with --all)."),
    all_: bool = typer.Option(False, "--all", help="Remove every lab with the prefix."),
    prefix: str = typer.Option(DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP),
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
def status(prefix: str = typer.Option(DEFAULT_PREFIX, "--prefix", help=PREFIX_HELP)) -> None:
    """List the labs, their processes and daemons."""
    labs = harness.lab_status(prefix)
    if not labs:
        console.print(f"no {prefix}* labs")
        return
    table = Table("namespace", "exists", "processes", "daemons")
    for st in labs:
        daemons = ", ".join(f"{d} {pid or 'dead'}" for d, pid in st.daemons.items()) or "-"
        hosts = st.info.get("hosts") or {}
        if hosts:
            daemons = f"{len(hosts)} simulated hosts: " + ", ".join(hosts)
        table.add_row(st.namespace, "yes" if st.exists else "no (leftover state)",
                      str(len(st.pids)), daemons)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Adds `kubitect lab ...` to the root app."""
    app.add_typer(lab_app, name="lab")
