"""What the user sees while kubitect works: consoles, progress lines, a summary table, events.

Both displays are pluggy observers of the stage hooks, registered like any plugin, so a third
party can add its own (a chat notification, a metrics exporter) without touching core.

The consoles follow the environment, re-read for every command (`configure`):
- `NO_COLOR` (any value) or `--no-color`: no colour; `FORCE_COLOR`: colour even when piped;
  `TERM=dumb`: no colour and no styling (rich's own rules for these three);
- off a terminal (a pipe, a file, CI logs) nothing is hard-wrapped: a long line stays one line,
  a table keeps its natural width, whatever COLUMNS says. On a terminal, its width.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubitect_core.events import event, serialize
from kubitect_core.hookspecs import hookimpl
from kubitect_core.redact import redact_data

UNWRAPPED_WIDTH = 10_000  # "no width": rich needs a number; nothing kubitect prints is this wide

_settings: dict[str, Any] = {"no_color": False}
_consoles: dict[bool, Console] = {}


def configure(*, no_color: bool = False) -> None:
    """Starts a command: consoles are rebuilt on next use from today's environment and streams."""
    _settings["no_color"] = no_color
    _consoles.clear()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def make_console(*, stderr: bool = False, file: Any = None) -> Console:
    """A rich console for stdout or stderr that follows the rules in the module docstring."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    no_color = _settings["no_color"] or bool(os.environ.get("NO_COLOR"))
    options: dict[str, Any] = {"stderr": stderr, "highlight": False, "file": file}
    if no_color:
        options["no_color"] = True
    if not _isatty(stream):
        options.update(width=UNWRAPPED_WIDTH, soft_wrap=True)
    return Console(**options)


def current_console(stderr: bool = False) -> Console:
    if stderr not in _consoles:
        _consoles[stderr] = make_console(stderr=stderr)
    return _consoles[stderr]


class _ConsoleHandle:
    """Stands for the command's console (stdout or stderr), built when first used."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(current_console(self._stderr), name)


console: Console = _ConsoleHandle(False)  # type: ignore[assignment]
err_console: Console = _ConsoleHandle(True)  # type: ignore[assignment]


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
                # One print for the whole list: a print per change was half of plan's time at
                # 5,000 nodes (rich renders each call on its own). Plain text, so no markup to escape.
                shown = [f"           {c}" for c in changes if getattr(c, "action", "") != "keep" or self.verbose]
                if shown:
                    self.out.print("\n".join(shown), markup=False, highlight=False, soft_wrap=True)
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


def change_data(change: Any) -> dict[str, Any]:
    """A `Change` as event data."""
    return {"action": change.action, "kind": change.kind, "name": change.name, "host": change.host,
            "detail": change.detail}


class JsonEvents:
    """Writes every stage event (docs/events.md) to a stream (JSON lines or YAML documents, as
    `-o` says) and/or appends it to a file as a JSON line. Secrets are redacted first."""

    def __init__(self, stream=None, path: Path | None = None, format: str = "json"):
        self.stream = stream
        self.path = path
        self.format = format

    def _emit(self, name: str, **fields: Any) -> None:
        data = redact_data(event(name, **fields))
        if self.stream is not None:
            self.stream.write(serialize(data, self.format))
            self.stream.flush()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(serialize(data))

    @hookimpl
    def kubitect_stage_started(self, cluster, stage, action) -> None:
        self._emit("stage_started", cluster=cluster, stage=stage, action=action)

    @hookimpl
    def kubitect_stage_progress(self, cluster, stage, subject, message) -> None:
        self._emit("progress", cluster=cluster, stage=stage, subject=subject, message=message)

    @hookimpl
    def kubitect_stage_finished(self, cluster, stage, action, ok, seconds, changes, error) -> None:
        self._emit("stage_finished", cluster=cluster, stage=stage, action=action, ok=ok, seconds=round(seconds, 3),
                   error=error, changes=[change_data(c) for c in changes])


def error_box(title: str, lines: list[str]) -> None:
    """A boxed error on stderr (kept for callers outside the CLI package; the CLI uses
    `kubitect_core.cli.errors`, which draws the same box)."""
    from kubitect_core.cli.errors import Failure, render

    render(Failure(kind="error", summary="\n".join(str(x) for x in lines), title=title))


def is_interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()
