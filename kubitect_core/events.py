"""The event stream's shape, versioned: what `-o json` prints and events.jsonl keeps (docs/events.md).

Every event is a flat JSON object that starts with `"v"` (this format's version: bumped only when
a field changes meaning or goes away; new fields and new events keep it), `"time"` (UTC, ISO 8601,
milliseconds) and `"event"` (its name). A stream is JSON Lines (one event per line) or, with
`-o yaml`, YAML documents each starting with `---`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

EVENTS_VERSION = 1


def event(name: str, **fields: Any) -> dict[str, Any]:
    """An event as every stream carries it: version, time, name, then its own fields."""
    return {"v": EVENTS_VERSION, "time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": name,
            **fields}


def plain(data: Any) -> Any:
    """JSON-able values only (what `json.dumps(default=str)` writes), so YAML shows no Python tags."""
    return json.loads(json.dumps(data, default=str))


def serialize(data: dict[str, Any], fmt: str = "json") -> str:
    """One event as text: a JSON line, or (fmt "yaml") a YAML document starting with `---`."""
    if fmt == "yaml":
        import yaml

        return "---\n" + yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True)
    return json.dumps(data, default=str, ensure_ascii=False) + "\n"
