"""Edit nested config data by dot path (`cluster.nodes.master.instances[1].ip`)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "examples" / "ha.yaml"


def set_path(data, path: str, value) -> None:
    """Sets `a.b[1].c` in nested data, creating mappings on the way."""
    parts = _split(path)
    node = data
    for part in parts[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[parts[-1]] = value


def del_path(data, path: str) -> None:
    parts = _split(path)
    node = data
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]


def get_path(data, path: str):
    node = data
    for part in _split(path):
        node = node[part]
    return node


def _split(path: str) -> list:
    out: list = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        out.append(int(token[1:-1]) if token.startswith("[") else token)
    return out
