"""`kubitect adopt`: take over a cluster that Kubitect (Go) made (kubitect_core.adopt)."""

from __future__ import annotations

import typer
from rich.markup import escape

from kubitect_core.cli import output
from kubitect_core.cli.groups import cluster_option, debug_option, home_option, output_option, resolve_home
from kubitect_core.ui import change_data, console


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example: kubitect adopt --cluster k8s-cluster --dry-run\n\n"
                 "Example: kubitect adopt --cluster k8s-cluster")
    def adopt(
        cluster: str = cluster_option("Name of the cluster Kubitect (Go) made (its directory under clusters/)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Check and list what would be taken over; change "
                                     "nothing."),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Take over a cluster Kubitect (Go) made: its VMs, disks, network and pools (from its Terraform
        state), its SSH key and kubeconfig. Names are kept, nothing is recreated, Kubitect's files stay
        as they are; Kubernetes and the load balancers Kubitect installed are held as they are.
        Adopting twice changes nothing."""
        from kubitect_core.adopt import adopt as run_adopt
        from kubitect_core.cli.pipeline_cmds import _engine, _handle
        from kubitect_core.engine import run_sync

        engine, progress = _engine(resolve_home(home, cluster=cluster), auto_approve=True)
        outcome = _handle(lambda: run_sync(run_adopt(engine, cluster, dry_run=dry_run)), progress, engine)
        if output.machine():
            output.emit(output.event("result", command="adopt", cluster=cluster, ok=True, dry_run=dry_run,
                                     already=outcome.already, changes=[change_data(c) for c in outcome.changes],
                                     notes=outcome.notes))
            return
        for c in outcome.changes:
            console.print(f"  {escape(str(c))}", soft_wrap=True)
        for note in outcome.notes:
            console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
        if outcome.already:
            console.print(f"Cluster '{escape(cluster)}' is adopted already: nothing changed.")
        elif dry_run:
            console.print(f"Cluster '{escape(cluster)}' can be adopted (dry run: nothing changed).")
        else:
            console.print(f"Cluster '{escape(cluster)}' adopted from Kubitect (Go). `kubitect plan --config FILE` "
                          "with its config now shows no change; do not run Kubitect (Go) on it any more.",
                          soft_wrap=True)
