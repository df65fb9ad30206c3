"""Config problems as a user sees them: a dot path, a place in the file, what is wrong and allowed."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass
class ConfigIssue:
    """One problem found in a config, located by dot path and (when known) file, line and column."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    severity: Severity = "error"

    @property
    def location(self) -> str:
        """`file:line:column` (as much of it as is known), the form editors jump to."""
        parts = [self.file or "<config>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.location}: {self.severity}{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `issues` holds every error found, not only the first."""

    def __init__(self, issues: list[ConfigIssue], headline: str = "invalid configuration file"):
        self.issues = list(issues)
        self.headline = headline
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if not self.issues:
            return self.headline
        lines = [f"{self.headline} ({len(self.issues)} error{'s' if len(self.issues) != 1 else ''}):"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


def format_path(loc: tuple | list) -> str:
    """Renders a location tuple as `cluster.nodes.master.instances[1].ip`."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + short_value(str(part), 80)
    return out


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 4, 4, 60, 60, 40


def short_value(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: bounded however large the value is (never the whole of an
    expanded alias or a 4,000-digit number), with control characters escaped."""
    if isinstance(value, str):
        text = value if value.isprintable() else value.encode("unicode_escape", "backslashreplace").decode("ascii")
    else:
        text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
