"""Day-2 commands for the control plane: replace a failed node, back up and restore etcd + PKI."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from kubitect_core.cli import output
from kubitect_core.cli.groups import cluster_option, debug_option, home_option, output_option, resolve_home
from kubitect_core.cli.pipeline_cmds import _engine, _handle, _result
from kubitect_core.ui import console


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example: kubitect replace --cluster kubitect-ha --node master-2\n\n"
                 "The node's etcd member and Kubernetes node are removed through a control plane that stays, "
                 "its machine is deleted and created again, and it rejoins with fresh join credentials.")
    def replace(
        cluster: str = cluster_option("Name of the cluster."),
        node: str = typer.Option(..., "--node", help="The node to rebuild: its name (kubitect-ha-master-2) or "
                                 "short name (master-2)."),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Do not ask for confirmation."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        debug: bool = debug_option(),
        fmt: output.Format = output_option(),
        home: str = home_option(),
    ) -> None:
        """Rebuild a failed master (or worker): etcd member removed, machine re-created, node rejoined."""
        from kubitect_core.confirmation import Confirmation
        from kubitect_core.engine import Aborted, Options, run_sync
        from kubitect_core.replace import replace_node

        engine, progress = _engine(resolve_home(home, cluster=cluster), auto_approve=auto_approve)

        def go():
            if not engine.confirm(Confirmation(
                    f"Delete and re-create the machine of {node} in cluster '{cluster}'?",
                    data_loss=[f"node {node}: its machine and disks are deleted and created afresh"])):
                raise Aborted("User aborted.")
            return run_sync(replace_node(engine, cluster, node, Options(wait_lock=wait_lock)))

        outcome = _handle(go, progress, engine)
        if output.machine():
            _result("replace", outcome, engine)
        elif progress:
            progress.summary(f"Node {node} of cluster '{cluster}' replaced")
        else:
            console.print(f"Node {escape(node)} of cluster '{escape(cluster)}' replaced.")

    @app.command(epilog="Example: kubitect backup --cluster kubitect-ha --file ha-backup.tar.gz\n\n"
                 "The file (created 0600) holds an etcd snapshot, the control plane's PKI and the cluster's "
                 "state files; keep it as safe as a private key.")
    def backup(
        cluster: str = cluster_option("Name of the cluster to back up."),
        out: Path = typer.Option(None, "--file", "-f", help="The backup file to create (never overwritten; "
                                 "default: ./<cluster>-backup-<time>.tar.gz)."),
        debug: bool = debug_option(),
        home: str = home_option(),
    ) -> None:
        """Save an etcd snapshot, the control-plane PKI and the cluster's state to one file (0600)."""
        from kubitect_core.backup import backup as do_backup
        from kubitect_core.backup import default_output
        from kubitect_core.engine import Options, run_sync

        engine, progress = _engine(resolve_home(home, cluster=cluster), auto_approve=True)
        target = out or default_output(cluster)
        info = _handle(lambda: run_sync(do_backup(engine, cluster, target, Options())), progress, engine)
        etcd = info.manifest["etcd"]
        console.print(f"Backup of '{escape(cluster)}' written to {escape(str(info.path))} ({info.size} bytes, "
                      f"mode 0600): etcd revision {etcd.get('revision')}, {etcd.get('totalKey')} keys, "
                      f"from {escape(info.manifest['from'])}.", soft_wrap=True)

    @app.command(epilog="Example: kubitect restore --cluster kubitect-ha ha-backup.tar.gz\n\n"
                 "Every master's etcd is stopped; the first is restored from the snapshot (PKI put back), the "
                 "others rejoin it. Everything written to the cluster after the backup is lost.")
    def restore(
        file: Path = typer.Argument(..., help="A file written by `kubitect backup`."),
        cluster: str = cluster_option("Name of the cluster to restore."),
        auto_approve: bool = typer.Option(False, "--auto-approve", "-y", help="Do not ask for confirmation."),
        wait_lock: float = typer.Option(0.0, "--wait-lock", help="Seconds to wait for another apply."),
        debug: bool = debug_option(),
        home: str = home_option(),
    ) -> None:
        """Bring a cluster's control plane back from a backup: etcd restored, PKI put back."""
        from kubitect_core.backup import restore as do_restore
        from kubitect_core.confirmation import Confirmation
        from kubitect_core.engine import Aborted, Options, run_sync

        engine, progress = _engine(resolve_home(home, cluster=cluster), auto_approve=auto_approve)

        def go():
            if not engine.confirm(Confirmation(
                    f"Restore cluster '{cluster}' from {file}?",
                    data_loss=["etcd is rolled back to the backup: everything written to the cluster after it "
                               "is lost"])):
                raise Aborted("User aborted.")
            return run_sync(do_restore(engine, cluster, file, Options(wait_lock=wait_lock)))

        done = _handle(go, progress, engine)
        for line in done:
            console.print(f"  {escape(line)}", soft_wrap=True)
        console.print(f"Cluster '{escape(cluster)}' restored from {escape(str(file))}.", soft_wrap=True)
