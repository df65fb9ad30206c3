"""Reads YAML while keeping where every key and list item sits in the file.

PyYAML's composer keeps start marks on every node; we index them by location tuple so any
error (from pydantic, the rules, or an extension) can name the line and column it is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Loc = tuple  # ("cluster", "nodes", "master", "instances", 1, "ip")


@dataclass
class MarkedYaml:
    """The parsed data plus a map from location to (line, column), both 1-based."""

    data: Any
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[Loc] = field(default_factory=list)

    def position(self, loc: Loc) -> tuple[int | None, int | None]:
        """Line and column of `loc`, or of its nearest ancestor present in the file."""
        loc = tuple(loc)
        while True:
            if loc in self.marks:
                return self.marks[loc]
            if not loc:
                return (None, None)
            loc = loc[:-1]


class _Loader(yaml.SafeLoader):
    """SafeLoader; kept separate so nothing we do leaks into PyYAML's global resolvers."""


def parse(text: str) -> MarkedYaml:
    """Parses one YAML document; raises yaml.YAMLError for malformed text."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return MarkedYaml(data=None)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    marked = MarkedYaml(data=data)
    _index(node, (), marked, set())
    return marked


def _key_of(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value = node.value
        if node.tag.endswith(":int"):
            try:
                return int(value)
            except ValueError:
                return value
        return value
    return repr(node.value)[:40]


def _index(node: yaml.Node, loc: Loc, out: MarkedYaml, seen: set[int]) -> None:
    out.marks.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key_of(key_node)
            child = (*loc, key)
            try:
                if key in keys:
                    out.duplicates.append(child)
                keys.add(key)
            except TypeError:
                pass
            out.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _index(value_node, child, out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*loc, i), out, seen)
