"""`kubitect export logs --cluster N`: the cluster's run logs and event log in one tar.gz (0600).

What to attach to a bug report, or keep from a CI run: every run log (`logs/*.log`: each
command run on each node, with its exit status, output and timings, secrets redacted) and the
event log (`events.jsonl`). The bundle is created 0600 and never overwrites a file.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from kubitect_core.cli import output
from kubitect_core.cli.errors import EXIT_USAGE, Failure, fail
from kubitect_core.cli.groups import cluster_option, export_app, home_option, output_option, resolve_home


@export_app.command("logs", epilog="Example: kubitect export logs --cluster kubitect-ha --file ha-logs.tar.gz")
def export_logs(
    cluster: str = cluster_option("Cluster whose logs to bundle."),
    file: str = typer.Option(None, "--file", "-f", metavar="PATH",
                             help="Where to write the tar.gz ('-' for stdout; default "
                                  "./<cluster>-logs-<UTC time>.tar.gz). Never overwritten."),
    out_format: output.Format = output_option("text or json/yaml (a document naming the bundle and its files)."),
    home: str = home_option(),
) -> None:
    """Bundle the cluster's run logs (every node command, its output and timings) and event log."""
    from kubitect_core import runlog
    from kubitect_core.state import ClusterState

    state = ClusterState(resolve_home(home, cluster=cluster), cluster)
    if not state.exists():
        raise fail(Failure("state", f"cluster '{cluster}' does not exist (in {state.dir.parent})"))
    if not runlog.log_files(state.dir / "logs") and not state.events_path.is_file():
        raise fail(Failure("state", f"cluster '{cluster}' has no logs yet (in {state.dir / 'logs'})"))
    prefix = f"{cluster}-logs-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    if file == "-":
        if sys.stdout.isatty():
            raise fail(Failure("usage", "refusing to write a tar.gz to a terminal: redirect stdout, or use --file",
                               exit_code=EXIT_USAGE))
        runlog.bundle(state.dir, sys.stdout.buffer, prefix=prefix)
        sys.stdout.buffer.flush()
        return
    path = Path(file) if file else Path(f"{prefix}.tar.gz")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise fail(Failure("usage", f"{path} exists; kubitect does not overwrite it (choose another --file)",
                           exit_code=EXIT_USAGE)) from None
    except OSError as exc:
        raise fail(Failure("error", f"cannot create {path}: {exc.strerror or exc}")) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            names = runlog.bundle(state.dir, fh, prefix=prefix)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    size = path.stat().st_size
    if output.machine():
        output.document({"v": output.EVENTS_VERSION, "kind": "log-bundle", "cluster": cluster,
                         "file": str(path.resolve()), "bytes": size, "files": names})
    else:
        from kubitect_core.ui import console

        console.print(f"Wrote {path} ({len(names)} file{'s' if len(names) != 1 else ''}, {size} bytes, mode 0600)",
                      markup=False)


def register(app: typer.Typer) -> None:
    """`export logs` registers itself on the export group when this module is imported."""
