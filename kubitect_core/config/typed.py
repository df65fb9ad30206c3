"""Reads YAML values the way Kubitect's typed Go decoder does, guided by the config models.

Why: yaml.v3 decodes a scalar into the type of the field it lands in. A text field gets the
scalar's source text (`id: 010` is "010", `name: on` is "on", `version: 1.30` is "1.30"); a
null or empty value leaves a field at its zero value, so it counts as not set; a label written
without a value (`node-role.kubernetes.io/node:`) is "". Pydantic, given YAML's untyped data,
would see 10, True, 1.3 and None instead. `as_typed` rewrites the parsed data once, before the
model and the rules see it, so both judge what Kubitect would have judged.
"""

from __future__ import annotations

import math
import re
import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from kubitect_core.config.yamlscalars import resolve_plain

Loc = tuple


# `010`: YAML 1.2 reads 10, Kubitect's yaml.v3 reads octal 8 into a number field. Neither guess is safe.
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")


def as_typed(data: Any, model: type[BaseModel], texts: dict[Loc, str] | None = None, loc: Loc = (),
             problems: list[tuple[Loc, str]] | None = None) -> Any:
    """A copy of `data` with text fields holding source text and null fields left out.

    Numbers written in a way Kubitect would read differently (`cpu: 010`) are appended to
    `problems` as (location, message).
    """
    return _Walker(texts or {}, problems if problems is not None else []).walk(data, model, tuple(loc))


class _Walker:
    def __init__(self, texts: dict[Loc, str], problems: list[tuple[Loc, str]]):
        self.texts = texts
        self.problems = problems

    def walk(self, value: Any, annotation: Any, loc: Loc) -> Any:
        kind = unwrap_annotation(annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return self._model(value, kind, loc) if isinstance(value, dict) else value
        origin = get_origin(kind)
        if origin is list and isinstance(value, list):
            (item,) = get_args(kind) or (Any,)
            return [self.walk(v, item, (*loc, i)) for i, v in enumerate(value)]
        if origin is dict and isinstance(value, dict):
            _key, item = get_args(kind) or (str, Any)
            wants_text = unwrap_annotation(item) is str
            out = {}
            for k, v in value.items():
                key = k if isinstance(k, str) else self.text_of(k, None)
                out[key] = "" if v is None and wants_text else self.walk(v, item, (*loc, k))
            return out
        if kind is str:
            return self.text_of(value, loc)
        if kind is int and type(value) is int:
            text = self.texts.get(loc)
            if text is not None and _LEADING_ZERO.fullmatch(text):
                self.problems.append((loc, f"{text} is ambiguous: Kubitect reads a number with a leading 0 as "
                                           f"octal, YAML 1.2 as decimal ({value}); write it without the leading 0."))
        return value

    def _model(self, value: dict, model: type[BaseModel], loc: Loc) -> dict:
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        out = {}
        for key, item in value.items():
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                out[key] = item  # unknown key: left for the model to report
            elif item is not None:  # null: the field is not set (Go: zero value, then defaults)
                out[key] = self.walk(item, field.annotation, (*loc, key))
        return out

    def text_of(self, value: Any, loc: Loc | None) -> Any:
        """A scalar as the text Kubitect would have read; lists and mappings stay as they are."""
        if isinstance(value, str) or value is None or isinstance(value, list | dict):
            return value
        text = self.texts.get(loc) if loc is not None else None
        if text is not None and _same(resolve_plain(text), value):
            return text
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
            return repr(value)
        return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (True == 1 must not match); NaN equals NaN here."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def unwrap_annotation(annotation: Any) -> Any:
    """Strips Optional/Annotated so the walk reaches the type a value must have."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
