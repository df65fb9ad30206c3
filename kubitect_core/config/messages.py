"""Turns pydantic's error records into messages that say what is wrong and what is allowed."""

from __future__ import annotations

import difflib
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from kubitect_core.config.errors import short_value
from kubitect_core.config.models import Config
from kubitect_core.config.typed import unwrap_annotation as _unwrap


def model_at(loc: tuple, root: type[BaseModel] = Config) -> Any:
    """The model class (or type) at a location in the config, or None when it leads nowhere."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            if get_origin(current) is list:
                current = get_args(current)[0]
                continue
            return None
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _field_by_key(current, part)
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    return _unwrap(current)


def _field_by_key(model: type[BaseModel], key: Any) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The YAML keys a mapping of this model accepts."""
    return [field.alias or name for name, field in model.model_fields.items()]


def suggest(key: str, candidates: list[str]) -> str | None:
    """The closest valid key to a misspelt one (case-insensitive), if any is close enough."""
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _expected(ctx: dict | None) -> str:
    raw = (ctx or {}).get("expected", "")
    items = [p.strip().strip("'") for p in raw.replace(" or ", ", ").split(",") if p.strip()]
    return "[" + "|".join(items) + "]"


def translate(error: dict, extra_keys: dict[tuple, list[str]] | None = None,
              root: type[BaseModel] = Config) -> str:
    """One pydantic error record -> a user-facing message (what is wrong, what is allowed)."""
    kind, loc, value, ctx = error["type"], tuple(error["loc"]), error.get("input"), error.get("ctx")
    if kind == "extra_forbidden":
        parent = model_at(loc[:-1], root)
        keys = valid_keys(parent) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        keys += (extra_keys or {}).get(loc[:-1], [])
        guess = suggest(str(loc[-1]), keys)
        hint = f" did you mean `{guess}`?" if guess else ""
        return f"unknown key `{loc[-1]}`;{hint} allowed keys here: {', '.join(sorted(keys)) or 'none'}."
    if kind == "missing":
        parent = model_at(loc[:-1], root)
        field = _field_by_key(parent, loc[-1]) if isinstance(parent, type) and issubclass(parent, BaseModel) else None
        described = f" {field.description}" if field is not None and field.description else ""
        return f"is required.{described}"
    if kind == "literal_error":
        return f"must be one of the following values: {_expected(ctx)} (actual: {short_value(value)})."
    if kind in ("int_type", "int_parsing", "int_from_float") and isinstance(value, str):
        return f"must be a whole number such as 4, not text (actual: {short_value(value)!r})."
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number (actual: {short_value(value)})."
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false (actual: {short_value(value)})."
    if kind == "string_type":
        return f"must be a string (actual: {short_value(value)})."
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys to values (actual: {short_value(value)})."
    if kind == "list_type":
        return f"must be a list (actual: {short_value(value)})."
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (actual: {short_value(value)})."
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']} (actual: {short_value(value)})."
    message = error.get("msg", "is invalid")
    if not message.endswith("."):
        message += "."
    return message
