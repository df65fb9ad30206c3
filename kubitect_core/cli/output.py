"""`-o/--output text|json|yaml`: one option, one notion of "the format this command writes".

Machine formats keep stdout machine-readable, whatever happens: a read command writes one
document, a pipeline command writes a stream of events (JSON Lines, or YAML documents separated
by `---`), and an error is one more event (`"event": "error"`) instead of a box on stderr. Every
event carries `"v": EVENTS_VERSION`; docs/events.md describes them.

The format is process state, set by the option's callback while the command line is parsed, so
the error renderer (`kubitect_core.cli.errors`) can honour it without each command passing it on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import typer

from kubitect_core.events import EVENTS_VERSION, event, plain, serialize

__all__ = ["EVENTS_VERSION", "Format", "event", "emit", "document", "listing", "format_option"]


class Format(StrEnum):
    text = "text"
    json = "json"
    yaml = "yaml"


_current = Format.text


def current() -> Format:
    return _current


def machine() -> bool:
    """True when stdout belongs to a program (json or yaml): nothing else may be printed there."""
    return _current is not Format.text


def set_format(value: Format | str | None) -> Format:
    global _current
    _current = Format(value or Format.text)
    return _current


def reset() -> None:
    set_format(Format.text)


def _remember(value: Format | None) -> Format | None:
    if value is not None:
        set_format(value)
    return value


def format_option(help: str = "text, json or yaml.") -> Any:
    """The shared `-o/--output` option (validated: anything else is a usage error, exit 2)."""
    return typer.Option(Format.text, "--output", "-o", case_sensitive=False, callback=_remember, help=help)


def emit(data: dict[str, Any], stream: Any = None) -> None:
    """Writes one event to stdout (or `stream`) in the current machine format, flushed at once."""
    out = stream or sys.stdout
    out.write(serialize(data, "yaml" if _current is Format.yaml else "json"))
    out.flush()


def document(data: Any) -> None:
    """Writes a read command's whole answer in the current machine format."""
    if _current is Format.yaml:
        import yaml

        typer.echo(yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True), nl=False)
    else:
        typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def listing(kind: str, items: Sequence[Any], **extra: Any) -> dict[str, Any]:
    """A versioned list document: `{"v": 1, "kind": ..., "items": [...]}` (kubectl's List shape)."""
    return {"v": EVENTS_VERSION, "kind": kind, **extra, "items": list(items)}


def argv_format(argv: Sequence[str]) -> Format:
    """The `-o` value on a command line that could not be parsed (for the usage-error event)."""
    value: str | None = None
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", "--output") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--output="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:].lstrip("=")
    try:
        return Format((value or "text").lower())
    except ValueError:
        return Format.text
