"""What `list clusters` and `export config|kubeconfig|report` read from a home, robustly.

Each cluster directory is judged on its own: one damaged record marks that cluster damaged
(naming the file and the problem) and the others are listed as usual. Directories that Kubitect
(Go) made are recognised (`kubitect_core.legacy`) and their own files are exported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubitect_core.legacy import ORIGINAL, detect, is_adopted
from kubitect_core.state import (
    ClusterState,
    StateError,
    StateFileError,
    cluster_entries,
    read_state_json,
    read_state_text,
)


def _status(state: ClusterState) -> str:
    record = state.load_record()
    stages = record.get("stages", {})
    holder = state.lock_holder()
    running = [n for n, e in stages.items() if e.get("status") in ("running", "interrupted")]
    failed = [n for n, e in stages.items() if e.get("status") == "failed"]
    skipped = [n for n, e in stages.items() if e.get("status") == "skipped"]
    if holder:
        return f"being changed by PID {holder}" + (f" (stage {running[0]})" if running else "")
    if running:
        return f"interrupted at {running[0]}"
    if failed:
        return f"failed at {failed[0]}"
    if not stages:
        return "empty"
    status = "applied" if state.applied_text() is not None else "created"
    return status + (f" (skipped: {', '.join(skipped)})" if skipped else "")


def cluster_rows(home: Path) -> list[dict[str, Any]]:
    """One row per cluster directory: name, who made it, status, directory, damaged."""
    rows = []
    for name, state in cluster_entries(home):
        directory = str(home / "clusters" / name)
        row = {"name": name, "made_by": "kubitect", "status": "", "dir": directory, "damaged": False}
        if state is None:
            row.update(made_by="?", status="ignored: not a valid cluster name")
        elif (legacy := detect(state.dir)) is not None:
            row.update(made_by=ORIGINAL, status=legacy.status())
        else:
            if is_adopted(state.dir):
                row["made_by"] = f"kubitect (adopted from {ORIGINAL})"
            try:
                row["status"] = _status(state)
            except StateFileError as exc:
                row.update(status=f"damaged: {exc.path.name} {exc.problem}", damaged=True)
        rows.append(row)
    return rows


def _existing(home: Path, cluster: str) -> ClusterState:
    state = ClusterState(home, cluster)
    if not state.exists():
        raise StateError(f"cluster '{cluster}' does not exist (in {state.dir.parent})")
    return state


def _exported(home: Path, cluster: str, what: str, legacy_file, own_files) -> str:
    """The first stored copy of `what` that exists: Kubitect's file for its clusters, else ours."""
    state = _existing(home, cluster)
    legacy = detect(state.dir)
    if legacy is not None:
        found = legacy_file(legacy)
        if found is None:
            raise StateError(f"cluster '{cluster}' (made by {ORIGINAL}) does not contain a {what} file")
        return found[1]
    for read in own_files(state):
        text = read()
        if text is not None:
            return text
    raise StateError(f"cluster '{cluster}' has no {what} yet (in {state.dir})")


def exported_config(home: Path, cluster: str) -> str:
    """The last applied config as the user wrote it (else the last attempted one)."""
    return _exported(home, cluster, "config", lambda legacy: legacy.config_text(),
                     lambda state: (state.applied_text, state.config_text))


def exported_kubeconfig(home: Path, cluster: str) -> str:
    """The admin kubeconfig (Kubitect's `config/admin.conf` for its clusters)."""
    return _exported(home, cluster, "kubeconfig", lambda legacy: legacy.kubeconfig_text(),
                     lambda state: (lambda: read_state_text(state.kubeconfig_path),))


def exported_report(home: Path, cluster: str, output: str) -> str:
    """The last conformance report, as JSON or as the text tables."""
    from kubitect_core.report import render_text

    state = _existing(home, cluster)
    path = state.reports_dir / "conformance.json"
    data = read_state_json(path)
    if data is None:
        raise StateError(f"cluster '{cluster}' has no conformance report yet: run `kubitect verify --cluster "
                         f"{cluster}`")
    if output == "json":
        return json.dumps(data)
    if not isinstance(data, dict):
        raise StateFileError(path, "is not a conformance report (not a JSON object)")
    try:
        return render_text(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateFileError(path, f"is not a conformance report kubitect can show ({type(exc).__name__}: "
                                   f"{exc})") from None
