"""The one way every command reports what went wrong: config, preflight, usage, plan and apply.

For people (`-o text`): one box per problem on stderr, titled with its severity and config path,
holding `file:line:column` and the message; at most `MAX_SHOWN` boxes, then a count; then one
summary line; and when the run wrote a log, the last line names it. For programs (`-o json|yaml`):
exactly one `error` event on stdout (docs/events.md) and nothing on stderr.

`fail()` renders and returns the `typer.Exit` to raise, so a command reads `raise fail(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel
from rich.text import Text

from kubitect_core.cli import output

MAX_SHOWN = 50  # a file with 10,000 duplicate hosts gets 50 boxes and a count, not 10,000
EXIT_FAILED, EXIT_USAGE = 1, 2


@dataclass
class Problem:
    """One thing wrong: what, and where (config path and place in a file, when known)."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None
    column: int | None = None
    severity: str = "error"  # error | warning

    @property
    def location(self) -> str:
        if not self.file:
            return ""
        return ":".join(str(p) for p in (self.file, self.line, self.column if self.line else None) if p)

    @classmethod
    def from_issue(cls, issue: Any) -> Problem:
        """From a `kubitect_core.config.ConfigIssue`."""
        return cls(issue.message, issue.path, issue.file or "<config>", issue.line, issue.column, issue.severity)

    def data(self) -> dict[str, Any]:
        return {"severity": self.severity, "path": self.path or None, "file": self.file, "line": self.line,
                "column": self.column, "message": self.message}


@dataclass
class Failure:
    """A command's failure: its kind (docs/events.md), a one-line summary, the problems behind it."""

    kind: str  # usage | config | preflight | changes | stage | state | interrupted | error
    summary: str
    problems: list[Problem] = field(default_factory=list)
    exit_code: int = EXIT_FAILED
    log: Path | None = None
    title: str = "Error"
    extra: dict[str, Any] = field(default_factory=dict)  # more data for the JSON event only

    def data(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.summary, "exit_code": self.exit_code,
                "problems": [p.data() for p in self.problems], "log": str(self.log) if self.log else None,
                **self.extra}


def _box(title: str, body: str, style: str) -> Panel:
    return Panel(Text(body), title=Text(title), title_align="left", border_style=style, expand=False)


def print_problems(problems: Sequence[Problem], console: Any = None) -> None:
    """The boxes alone (also for warnings that do not fail the command)."""
    from kubitect_core.ui import err_console

    console = console or err_console
    for p in problems[:MAX_SHOWN]:
        title = f"{p.severity.capitalize()}: {p.path or '(file)'}" if p.path or p.file else p.severity.capitalize()
        body = f"{p.location}\n{p.message}" if p.location else p.message
        console.print(_box(title, body, "red" if p.severity == "error" else "yellow"))
    if len(problems) > MAX_SHOWN:
        rest = len(problems) - MAX_SHOWN
        console.print(Text(f"... and {rest} more issue{'s' if rest != 1 else ''} like these, not shown."))


def render(failure: Failure) -> None:
    """Shows a failure in the command's output format (see the module docstring)."""
    if output.machine():
        output.emit(output.event("error", **failure.data()))
        return
    from kubitect_core.ui import err_console

    if failure.problems:
        print_problems(failure.problems)
        err_console.print(Text.assemble(("error", "red"), " ", failure.summary))
    else:
        err_console.print(_box(failure.title, failure.summary, "red"))
    if failure.log is not None:
        err_console.print(Text(f"Log: {failure.log}"))


def fail(failure: Failure) -> typer.Exit:
    """Renders `failure` and returns the Exit carrying its code: `raise fail(Failure(...))`."""
    render(failure)
    return typer.Exit(failure.exit_code)


def config_failure(issues: Iterable[Any], source: Any, *, kind: str = "config",
                   headline: str = "invalid configuration file") -> Failure:
    """The failure for a config (or preflight) that cannot be used: one problem per issue."""
    problems = [Problem.from_issue(i) for i in issues]
    count = f"{len(problems)} error{'s' if len(problems) != 1 else ''}"
    where = f" {source}" if source else ""
    return Failure(kind=kind, summary=f"{headline}{where}: {count}", problems=problems)
