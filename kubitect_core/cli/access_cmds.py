"""`kubitect ssh NODE [-- CMD]` and `kubitect export ssh-config`: the nodes through the cluster's
own key and pinned host keys (kubitect_core.access), with OpenSSH doing the talking.

`ssh` replaces this process with ssh(1), so a terminal, signals and the exit status are ssh's
own: `kubitect ssh master-1 -- systemctl is-active kubelet; echo $?` behaves as ssh does.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import typer

from kubitect_core.cli import output
from kubitect_core.cli.errors import EXIT_USAGE, Failure, fail
from kubitect_core.cli.groups import cluster_option, export_app, home_option, output_option, resolve_home


def _access(home: str | None, cluster: str):
    from kubitect_core.access import AccessError, open_access
    from kubitect_core.state import StateError

    try:
        return open_access(resolve_home(home, cluster=cluster), cluster)
    except AccessError as exc:
        raise fail(Failure("state", str(exc))) from None
    except StateError as exc:
        raise fail(Failure("state", str(exc))) from None


def _node_names(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """Completion: the nodes of the cluster given with --cluster (nothing when none is given yet)."""
    from kubitect_core.access import open_access

    cluster = (ctx.params or {}).get("cluster") if ctx is not None else None
    if not cluster:
        return []
    try:
        access = open_access(resolve_home((ctx.params or {}).get("home"), cluster=cluster), cluster)
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    return [(n.name, f"{n.role} on {n.host}, {n.address}") for n in access.topology.nodes
            if n.name.startswith(incomplete)]


def _print_status(doc: dict[str, Any]) -> None:
    """The status for people: one table row per node, then the VIP, Kubernetes and verify lines."""
    from rich.markup import escape
    from rich.table import Table

    from kubitect_core.status import age
    from kubitect_core.ui import console

    styles = {"reachable": "green", "unreachable": "red", "host key changed": "red bold"}
    table = Table("node", "role", "host", "address", "state", "notes")
    for row in doc["nodes"]:
        notes = []
        if row.get("holds_vip"):
            notes.append(f"holds the VIP {doc['vip']}")
        if row.get("kubernetes"):
            notes.append(f"Kubernetes: {row['kubernetes']}")
        if row.get("detail"):
            notes.append(row["detail"])
        state = row["state"]
        address = row["address"] or "-"
        if row["dhcp"] and row["address"]:
            address += " (DHCP)"
        table.add_row(escape(row["name"]), row["role"], escape(row["host"]), escape(address),
                      f"[{styles.get(state, 'yellow')}]{escape(state)}[/]", escape("; ".join(notes)))
    console.print(table)
    if doc["vip"]:
        holders = doc["vip_holders"]
        held = (f"held by {holders[0]}" if len(holders) == 1 else "held by nobody" if not holders
                else f"held by {len(holders)} load balancers at once: {', '.join(holders)}")
        console.print(f"VIP {doc['vip']}: {held}", markup=False)
    k8s = doc["kubernetes"]
    if k8s is None:
        console.print("Kubernetes: not installed yet", markup=False)
    elif k8s["error"]:
        console.print(f"Kubernetes: unknown ({k8s['error']})", markup=False)
    else:
        ready = sum(v == "Ready" for v in k8s["nodes"].values())
        console.print(f"Kubernetes: {ready} of {len(k8s['nodes'])} nodes Ready (asked {k8s['asked']})", markup=False)
    last = doc["last_verify"]
    if last is None:
        console.print("Last verify: never", markup=False)
    else:
        console.print(f"Last verify: {last['passed']} passed, {last['failed']} failed, {last['skipped']} skipped, "
                      f"{age(last['age_seconds'])} ago", markup=False)


def register(app: typer.Typer) -> None:
    @app.command("status", epilog="Example: kubitect status --cluster kubitect-ha -o json")
    def status(
        cluster: str = cluster_option("Cluster to look at."),
        timeout: float = typer.Option(5.0, "--timeout", min=0.5, max=120, metavar="SECONDS",
                                      help="How long to wait for each node to answer."),
        fmt: output.Format = output_option("text (a table), json or yaml (the cluster-status document)."),
        home: str = home_option(),
    ) -> None:
        """Show each node's state, which load balancer holds the VIP, Kubernetes readiness, last verify.

        Asks every node at once over SSH with the cluster's key and pinned host keys (a node whose
        key changed is reported, not trusted); changes nothing.
        """
        import asyncio

        from kubitect_core.status import gather

        access = _access(home, cluster)
        if output.machine():
            doc = asyncio.run(gather(access, timeout=timeout))
        else:
            from kubitect_core.ui import err_console

            with err_console.status(f"asking {len(access.topology.nodes)} node(s)"):
                doc = asyncio.run(gather(access, timeout=timeout))
        if output.machine():
            output.document(doc)
        else:
            _print_status(doc)

    @app.command("ssh", epilog="Example: kubitect ssh --cluster kubitect-ha master-1 -- sudo crictl ps")
    def ssh(
        node: str = typer.Argument(..., metavar="NODE", autocompletion=_node_names,
                                   help="Node name (kubitect-ha-master-1, or master-1) or its address."),
        command: list[str] = typer.Argument(None, metavar="[-- COMMAND...]",
                                            help="Run this instead of a login shell (after --, as with ssh)."),
        cluster: str = cluster_option("Cluster the node belongs to."),
        home: str = home_option(),
    ) -> None:
        """Open a shell (or run a command) on a node, with the cluster's key and pinned host keys.

        The node's host key must match the one kubitect pinned when it made the node: a changed
        key is refused, never learnt. The exit status is the remote command's.
        """
        from kubitect_core.access import AccessError, ssh_argv

        access = _access(home, cluster)
        if shutil.which("ssh") is None:
            raise fail(Failure("error", "the OpenSSH client (ssh) is not installed: apt install openssh-client"))
        try:
            argv = ssh_argv(access, access.node(node), list(command or []), tty=sys.stdin.isatty())
        except AccessError as exc:
            raise fail(Failure("state", str(exc))) from None
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp(argv[0], argv)

    @export_app.command("ssh-config", epilog="Example: kubitect export ssh-config --cluster kubitect-ha "
                                             ">> ~/.ssh/config.d/kubitect-ha")
    def export_ssh_config(
        cluster: str = cluster_option(),
        file: str = typer.Option(None, "--file", "-f", metavar="PATH",
                                 help="Write it to PATH (0600) instead of stdout. Never overwritten."),
        fmt: output.Format = output_option("text (the OpenSSH config) or json/yaml (each node's settings)."),
        home: str = home_option(),
    ) -> None:
        """Print an OpenSSH client config for the cluster's nodes (pinned host keys, cluster key).

        Each node becomes a Host entry by name and address, so `ssh -F FILE kubitect-ha-master-1`
        (or an Include of FILE in ~/.ssh/config) reaches it with strict host key checking against
        the keys kubitect pinned.
        """
        from kubitect_core.access import AccessError, write_ssh_config

        access = _access(home, cluster)
        try:
            text = write_ssh_config(access).read_text()
        except AccessError as exc:
            raise fail(Failure("state", str(exc))) from None
        if output.machine() and not file:
            output.document({"v": output.EVENTS_VERSION, "kind": "ssh-config", "cluster": cluster,
                             "file": str(access.ssh_config), "items": [
                                 {"name": n.name, "hostname": n.ip, "user": access.user, "port": 22,
                                  "identity_file": str(access.key), "known_hosts": str(access.known_hosts),
                                  "strict_host_key_checking": True} for n in access.reachable()]})
            return
        if not file:
            typer.echo(text, nl=False)
            return
        try:
            fd = os.open(Path(file), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise fail(Failure("usage", f"{file} exists; kubitect does not overwrite it (choose another --file)",
                               exit_code=EXIT_USAGE)) from None
        except OSError as exc:
            raise fail(Failure("error", f"cannot create {file}: {exc.strerror or exc}")) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
