"""What the user sees while kubitect works: progress lines, a summary table, JSON events.

Both displays are pluggy observers of the stage hooks, registered like any plugin, so a third
party can add its own (a chat notification, a metrics exporter) without touching core.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubitect_core.hookspecs import hookimpl

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def _change_summary(changes: list[Any]) -> str:
    counts: dict[str, int] = {}
    for c in changes:
        counts[getattr(c, "action", "?")] = counts.get(getattr(c, "action", "?"), 0) + 1
    order = ("create", "change", "delete", "keep")
    words = {"create": "created", "change": "changed", "delete": "deleted", "keep": "unchanged"}
    parts = [f"{counts[k]} {words[k]}" for k in order if counts.get(k)]
    return ", ".join(parts) or "nothing to do"


class RichProgress:
    """One line per stage and per node event, with elapsed time since the command started."""

    def __init__(self, out: Console | None = None, verbose: bool = False):
        self.out = out or console
        self.t0 = time.monotonic()
        self.rows: list[tuple[str, str, bool, float, str]] = []
        self.verbose = verbose
        self.failed = False  # a failure was shown: the closing error box need not repeat it

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.t0:7.1f}s[/dim]"

    @hookimpl
    def kubitect_stage_started(self, cluster: str, stage: str, action: str) -> None:
        self.out.print(f"{self._stamp()} [bold]{escape(stage)}[/bold] {escape(action)} …")

    @hookimpl
    def kubitect_stage_progress(self, cluster: str, stage: str, subject: str, message: str) -> None:
        self.out.print(f"{self._stamp()}   {escape(stage)} [cyan]{escape(subject)}[/cyan]: {escape(message)}")

    @hookimpl
    def kubitect_stage_finished(self, cluster, stage, action, ok, seconds, changes, error) -> None:
        if ok and error:  # skipped, with the reason in `error`
            self.out.print(f"{self._stamp()} [yellow]➜[/yellow] {escape(stage)} {escape(action)} {escape(error)}")
            self.rows.append((stage, action, True, seconds, error))
            return
        if ok:
            summary = _change_summary(changes) if action != "plan" else f"{len(changes)} planned"
            self.out.print(f"{self._stamp()} [green]✔[/green] {escape(stage)} {escape(action)} done in {seconds:.1f}s: "
                           f"{escape(summary)}")
            if self.verbose or action == "plan":
                for c in changes:
                    if getattr(c, "action", "") != "keep" or self.verbose:
                        self.out.print(f"           {escape(str(c))}")
        else:
            lines = str(error).splitlines() or [""]
            head = f"{self._stamp()} [red]✘[/red] {escape(stage)} {escape(action)} failed after {seconds:.1f}s:"
            if len(lines) == 1:
                self.out.print(f"{head} {escape(lines[0])}", soft_wrap=True)
            else:  # one line per host or problem, said once
                self.out.print(head)
                for line in lines:
                    self.out.print(f"           {escape(line)}", soft_wrap=True)
            self.failed = True
        self.rows.append((stage, action, ok, seconds, _change_summary(changes) if ok else (error or "")))

    def summary(self, title: str) -> None:
        if not self.rows:
            return
        table = Table(title=escape(title), title_justify="left")
        for col in ("stage", "action", "result", "time", "changes"):
            table.add_column(col)
        for stage, action, ok, seconds, summary in self.rows:
            result = "[red]failed[/red]" if not ok else \
                "[yellow]skipped[/yellow]" if summary.startswith("skipped") else "[green]ok[/green]"
            table.add_row(escape(stage), escape(action), result, f"{seconds:.1f}s",
                          escape(summary.splitlines()[0] if summary else ""))
        self.out.print(table)


class JsonEvents:
    """Writes every stage event as one JSON object per line (to a file and/or stdout)."""

    def __init__(self, stream=None, path: Path | None = None):
        self.stream = stream
        self.path = path

    def _emit(self, event: dict[str, Any]) -> None:
        event = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **event}
        line = json.dumps(event, default=str)
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(line + "\n")

    @hookimpl
    def kubitect_stage_started(self, cluster, stage, action) -> None:
        self._emit({"event": "stage_started", "cluster": cluster, "stage": stage, "action": action})

    @hookimpl
    def kubitect_stage_progress(self, cluster, stage, subject, message) -> None:
        self._emit({"event": "progress", "cluster": cluster, "stage": stage, "subject": subject,
                    "message": message})

    @hookimpl
    def kubitect_stage_finished(self, cluster, stage, action, ok, seconds, changes, error) -> None:
        self._emit({"event": "stage_finished", "cluster": cluster, "stage": stage, "action": action, "ok": ok,
                    "seconds": round(seconds, 3), "error": error,
                    "changes": [{"action": c.action, "kind": c.kind, "name": c.name, "host": c.host,
                                 "detail": c.detail} for c in changes]})


def error_box(title: str, lines: list[str]) -> None:
    """A boxed error on stderr, in the spirit of the original's blocks, without a traceback."""
    err_console.print(f"[red]┌ {escape(title)}[/red]")
    for line in lines:
        for sub in str(line).splitlines() or [""]:
            err_console.print(f"[red]│[/red] {escape(sub)}", soft_wrap=True)
    err_console.print("[red]└[/red]")


def is_interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()
