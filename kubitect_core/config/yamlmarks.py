"""Reads one YAML document into plain data while keeping where every key and list item sits.

Parsing is ruamel.yaml's (its libyaml-based C parser when installed, else its pure-Python one):
only its event stream is used. Composing and constructing are done here, because that is where
the dangers of untrusted YAML live and where the Go original's semantics have to be matched:

- YAML 1.2 scalars (`on` and `010` are text; see yamlscalars), as Kubitect's yaml.v3 reads them;
- aliases are expanded into plain trees, bounded by `MAX_VALUES` (alias bombs) and `MAX_DEPTH`,
  and an alias inside the node it names (a cycle) is an error;
- every key and list item gets a (line, column), so errors from the model, the rules or a plugin
  extension can name the line; values reached through an alias point at the alias;
- each plain scalar that became a number, boolean or null keeps its source text (`texts`), so a
  field that wants text gets `010`, not 10, as Kubitect does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml import events as ev
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from kubitect_core.config import yamlscalars as sc
from kubitect_core.config.limits import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_FLOW_PRESCAN, MAX_VALUES
from kubitect_core.config.yamlerrors import QuotedSpan, YamlProblem, explain

try:  # the C parser ships in ruamel.yaml.clibz (or the older ruamel.yaml.clib)
    from ruamel.yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _CParser = None

Loc = tuple  # ("cluster", "nodes", "master", "instances", 1, "ip")

__all__ = ["Loc", "MarkedYaml", "YamlProblem", "parse", "parser_kind"]


@dataclass
class MarkedYaml:
    """The parsed data plus a map from location to (line, column), both 1-based."""

    data: Any
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[Loc] = field(default_factory=list)
    texts: dict[Loc, str] = field(default_factory=dict)  # source text of plain non-string scalars

    def position(self, loc: Loc) -> tuple[int | None, int | None]:
        """Line and column of `loc`, or of its nearest ancestor present in the file."""
        loc = tuple(loc)
        while True:
            if loc in self.marks:
                return self.marks[loc]
            if not loc:
                return (None, None)
            loc = loc[:-1]


def parser_kind() -> str:
    """"c" when ruamel's C parser is in use, else "pure" (shown by tests and benchmarks)."""
    return "c" if _CParser is not None else "pure"


def parse(text: str, *, pure: bool = False) -> MarkedYaml:
    """Parses one YAML document; raises YamlProblem (with line and column) for unusable text."""
    _precheck(text)
    composer = _Composer()
    try:
        for event in _events(text, pure):
            composer.feed(event)
    except YamlProblem as exc:  # found while composing: the path is where the composer stands
        exc.path = exc.path or composer.current_path()
        raise
    except MarkedYAMLError as exc:
        raise explain(exc, text.splitlines(), composer.last_quoted, composer.open_flow()) from None
    except YAMLError as exc:  # e.g. a reader error without marks
        raise YamlProblem(f"{exc}".strip().rstrip(".") + ".") from None
    if composer.root is None:
        return MarkedYaml(data=None)
    marked = MarkedYaml(data=None)
    marked.data = _Builder(marked).build(composer.root, (), in_alias=False)
    marked.marks.setdefault((), composer.root.mark)
    return marked


def _events(text: str, pure: bool):
    if _CParser is not None and not pure:
        parser = _CParser(text)
        try:
            while parser.check_event():
                yield parser.get_event()
        finally:
            parser.dispose()
    else:
        yield from YAML(typ="safe", pure=True).parse(text)


def _precheck(text: str) -> None:
    """Refusals that must happen before the parser sees the text (size, characters, flow depth)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise YamlProblem(f"the config is larger than {MAX_CONFIG_BYTES // 1024} KiB ({len(text)} characters); "
                          "a cluster config is a few KiB.")
    bad = sc.NOT_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise YamlProblem(f"contains {sc.describe_char(bad.group())}, which YAML does not allow in a file.",
                          line, column)
    depth = 0
    for bracket in _BRACKETS.finditer(text):
        if bracket.group() in "[{":
            depth += 1
            if depth > MAX_FLOW_PRESCAN:
                i = bracket.start()
                line = text.count("\n", 0, i) + 1
                raise YamlProblem(f"lists or mappings are nested more than {MAX_DEPTH} levels deep.", line,
                                  i - text.rfind("\n", 0, i))
        elif depth:
            depth -= 1


_BRACKETS = re.compile(r"[\[\]{}]")


# -------------------------------------------------------------------------------- composing
class _Node:
    __slots__ = ("mark", "size", "height")

    def __init__(self, mark: tuple[int, int]):
        self.mark = mark
        self.size = 1  # values after alias expansion, this one included
        self.height = 0  # nesting levels below this one, after alias expansion


class _Scalar(_Node):
    __slots__ = ("value", "text", "plain")

    def __init__(self, mark, value: Any, text: str, plain: bool):
        super().__init__(mark)
        self.value, self.text, self.plain = value, text, plain

    @property
    def typed(self) -> bool:
        """A plain scalar that YAML made a number, boolean or null (its text is kept)."""
        return self.plain and not isinstance(self.value, str)


class _Seq(_Node):
    __slots__ = ("items",)

    def __init__(self, mark):
        super().__init__(mark)
        self.items: list[_Node] = []


class _Map(_Node):
    __slots__ = ("pairs", "pending")

    def __init__(self, mark):
        super().__init__(mark)
        self.pairs: list[tuple[_Node, _Node]] = []
        self.pending: _Node | None = None  # a key waiting for its value


class _Alias(_Node):
    __slots__ = ("target", "name")

    def __init__(self, mark, target: _Node, name: str):
        super().__init__(mark)
        self.target, self.name = target, name
        self.size, self.height = target.size, target.height


def _mark(event) -> tuple[int, int]:
    return (event.start_mark.line + 1, event.start_mark.column + 1)


class _Composer:
    """Turns parser events into a node tree, refusing cycles, bombs and excessive nesting."""

    def __init__(self) -> None:
        self.root: _Node | None = None
        self.stack: list[_Seq | _Map] = []
        self.anchors: dict[str, _Node] = {}
        self.open: set[int] = set()
        self.documents = 0
        self.last_quoted: QuotedSpan | None = None
        self.flows: list[tuple[int, tuple[int, int], str]] = []  # open `[`/`{`: (node id, mark, bracket)

    def current_path(self) -> tuple:
        """The config path of the value being composed: keys of the open mappings, list indexes."""
        path: list = []
        for node in self.stack:
            if isinstance(node, _Seq):
                path.append(len(node.items))
            elif node.pending is not None and isinstance(node.pending, _Scalar | _Alias):
                key = node.pending.target if isinstance(node.pending, _Alias) else node.pending
                if not isinstance(key, _Scalar):
                    break
                path.append(key.text)
            else:
                break
        return tuple(path)

    def open_flow(self) -> tuple[tuple[int, int], str] | None:
        """The innermost `[` or `{` still open, for errors that surface at the end of the file."""
        return self.flows[-1][1:] if self.flows else None  # type: ignore[return-value]

    def feed(self, event) -> None:
        kind = type(event)
        if kind is ev.ScalarEvent:
            node = self._scalar(event)
            if event.anchor is not None:
                self.anchors[event.anchor] = node
            self._attach_scalar(node)
        elif kind is ev.AliasEvent:
            self._attach(self._alias(event))
        elif kind is ev.SequenceStartEvent or kind is ev.MappingStartEvent:
            self._open(event)
        elif kind is ev.SequenceEndEvent or kind is ev.MappingEndEvent:
            node = self.stack.pop()
            self.open.discard(id(node))
            if self.flows and self.flows[-1][0] == id(node):
                self.flows.pop()
            if isinstance(node, _Map) and node.pending is not None:  # pragma: no cover - parser guarantees
                raise YamlProblem("a mapping key has no value.", *node.pending.mark)
            self._attach(node)
        elif kind is ev.DocumentStartEvent:
            self.documents += 1
            if self.documents > 1:
                raise YamlProblem("the file holds more than one YAML document ('---'); a config is one "
                                  "document.", *_mark(event))

    def _scalar(self, event) -> _Scalar:
        text, tag, style = event.value, event.tag, event.style
        start = event.start_mark
        mark = (start.line + 1, start.column + 1)
        if style == '"' or style == "'":
            if event.end_mark.line > start.line:
                self.last_quoted = QuotedSpan(mark[0], mark[1], event.end_mark.line + 1, style)
        try:
            if style == '"':  # only escapes ("\0", "\ud800") can bring what the raw-text check refused
                sc.check_text(text)
            if tag is None:
                plain = bool(event.implicit and event.implicit[0])
                return _Scalar(mark, sc.resolve_plain(text) if plain else text, text, plain)
            if tag == sc.MERGE:
                return _Scalar(mark, "<<", "<<", True)
            if tag == "!":
                return _Scalar(mark, text, text, False)
            return _Scalar(mark, sc.resolve_tagged(tag, text), text, False)
        except sc.ScalarProblem as exc:
            raise YamlProblem(f"{exc}.", *mark) from None

    def _alias(self, event) -> _Alias:
        name, mark = event.anchor, _mark(event)
        target = self.anchors.get(name)
        if target is None:
            raise YamlProblem(f"alias *{name} refers to no anchor &{name} defined before it.", *mark)
        if id(target) in self.open:
            raise YamlProblem(f"alias *{name} is used inside the value anchored as &{name} (a cycle); "
                              "an alias can only repeat a finished value.", *mark)
        return _Alias(mark, target, name)

    def _open(self, event) -> None:
        is_seq = isinstance(event, ev.SequenceStartEvent)
        tag = event.tag
        if tag not in (None, "!", sc.SEQ if is_seq else sc.MAP):
            raise YamlProblem(f"unsupported tag {sc.display_tag(tag)} on a {'list' if is_seq else 'mapping'}; "
                              "a config uses plain YAML values (remove the tag).", *_mark(event))
        if len(self.stack) >= MAX_DEPTH:
            raise YamlProblem(f"lists or mappings are nested more than {MAX_DEPTH} levels deep.", *_mark(event))
        node = _Seq(_mark(event)) if is_seq else _Map(_mark(event))
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        self.open.add(id(node))
        self.stack.append(node)
        if event.flow_style:
            self.flows.append((id(node), node.mark, "[" if is_seq else "{"))

    def _attach_scalar(self, node: _Scalar) -> None:
        """The common case, kept short: a scalar adds one value and no depth."""
        stack = self.stack
        if not stack:
            self.root = node
            return
        parent = stack[-1]
        parent.size += 1
        if not parent.height:
            parent.height = 1
        if parent.size > MAX_VALUES:
            self._too_many(node)
        _place(parent, node)

    def _attach(self, node: _Node) -> None:
        if not self.stack:
            self.root = node
            return
        parent = self.stack[-1]
        if len(self.stack) + node.height > MAX_DEPTH:
            raise YamlProblem(f"lists or mappings are nested more than {MAX_DEPTH} levels deep once aliases "
                              "are expanded.", *node.mark)
        parent.size += node.size
        parent.height = max(parent.height, node.height + 1)
        if parent.size > MAX_VALUES:
            self._too_many(node)
        _place(parent, node)

    @staticmethod
    def _too_many(node: _Node) -> None:
        if isinstance(node, _Alias):
            raise YamlProblem(f"alias *{node.name} makes the document larger than {MAX_VALUES} values once "
                              "aliases are expanded (an alias bomb?); a config needs a few hundred.", *node.mark)
        raise YamlProblem(f"the document holds more than {MAX_VALUES} values; a cluster config needs a few "
                          "hundred.", *node.mark)


def _place(parent: _Seq | _Map, node: _Node) -> None:
    """Appends a list item, or a mapping key (then its value) in the order the parser gives them."""
    if type(parent) is _Seq:
        parent.items.append(node)
    elif parent.pending is None:
        parent.pending = node
    else:
        parent.pairs.append((parent.pending, node))
        parent.pending = None


# ------------------------------------------------------------------------------ constructing
class _Builder:
    """Expands the node tree into dicts, lists and scalars, filling marks, duplicates and texts."""

    def __init__(self, out: MarkedYaml):
        self.out = out

    def build(self, node: _Node, loc: Loc, in_alias: bool) -> Any:
        if isinstance(node, _Alias):
            return self.build(node.target, loc, True)
        if isinstance(node, _Scalar):
            if node.typed:
                self.out.texts[loc] = node.text
            return node.value
        if isinstance(node, _Seq):
            items = []
            for i, item in enumerate(node.items):
                if not in_alias:
                    self.out.marks[(*loc, i)] = item.mark
                items.append(self.build(item, (*loc, i), in_alias))
            return items
        return self._mapping(node, loc, in_alias)  # type: ignore[arg-type]

    def _mapping(self, node: _Map, loc: Loc, in_alias: bool) -> dict:
        result: dict = {}
        merges: list[_Node] = []
        for key_node, value_node in node.pairs:
            if _is_merge(key_node):
                merges.append(value_node)
                continue
            try:
                key = _key_text(key_node)
            except YamlProblem as exc:
                exc.path = loc
                raise
            child = (*loc, key)
            if key in result and not in_alias:
                self.out.duplicates.append(child)
            if not in_alias:
                self.out.marks[child] = key_node.mark
            result[key] = self.build(value_node, child, in_alias)
        for source in merges:
            try:
                sources = self._merge_sources(source)
            except YamlProblem as exc:
                exc.path = (*loc, "<<")
                raise
            for mapping in sources:
                merged = MarkedYaml(data=None)
                for key, value in _Builder(merged).build(mapping, loc, True).items():
                    if key in result:
                        continue  # keys written in the mapping itself win over merged ones
                    result[key] = value
                    self.out.texts.update((at, text) for at, text in merged.texts.items() if at[len(loc)] == key)
        return result

    @staticmethod
    def _merge_sources(node: _Node) -> list[_Node]:
        """`<<: *a` or `<<: [*a, *b]`: the mappings to merge, in order of precedence."""
        target = node.target if isinstance(node, _Alias) else node
        if isinstance(target, _Map):
            return [target]
        if isinstance(target, _Seq):
            items = [i.target if isinstance(i, _Alias) else i for i in target.items]
            if all(isinstance(i, _Map) for i in items):
                return items
        raise YamlProblem("a merge key '<<' takes a mapping or a list of mappings (e.g. <<: *defaults).",
                          *node.mark)


def _is_merge(node: _Node) -> bool:
    return isinstance(node, _Scalar) and node.plain and node.text == "<<"


def _key_text(node: _Node) -> str:
    """A mapping key as Kubitect matches it: the key's text (`1:` is the key "1")."""
    target = node.target if isinstance(node, _Alias) else node
    if isinstance(target, _Scalar):
        return target.text
    raise YamlProblem("a mapping key must be a plain value, not a list or mapping.", *node.mark)
