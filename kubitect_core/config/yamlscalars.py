"""What a YAML scalar means: YAML 1.2 core schema, as Kubitect's Go decoder (yaml.v3) reads it.

Why our own resolver: PyYAML's YAML 1.1 rules turn `on`/`yes`/`no` into booleans, `010` into 8
and `2024-13-45` into a crash. Under YAML 1.2 (and in Kubitect) those stay text. Resolution is
the only place types are decided, so the rules are written out here rather than inherited.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kubitect_core.config.errors import short_value
from kubitect_core.config.limits import INT_MAX, INT_MIN

STR, INT, FLOAT, BOOL, NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
MAP, SEQ, MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
TIMESTAMP = "tag:yaml.org,2002:timestamp"

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_INT_OCT = re.compile(r"0o[0-7]+")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
# YAML's printable set (c-printable): a value decoded from an escape must stay inside it. Written
# as the complement's few ranges: the negated class over all of Unicode took 7 ms to compile at
# every start (the two are equal on every code point: tests/unit/test_fast_start.py).
NOT_PRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


class ScalarProblem(ValueError):
    """A scalar that cannot be used; the parser adds where it is."""


def resolve_plain(text: str) -> Any:
    """The value of an untagged plain scalar: None, bool, int, float or the text itself."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    first = text[0]
    if not (first.isdigit() or first in "+-."):
        return text  # the common case: a word
    number = _number(text)
    return text if number is None else number


def _number(text: str) -> int | float | None:
    if _INT.fullmatch(text):
        return _bounded_int(text, 10)
    if _INT_OCT.fullmatch(text):
        return _bounded_int(text[2:], 8)
    if _INT_HEX.fullmatch(text):
        return _bounded_int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return None


def _bounded_int(digits: str, base: int) -> int | None:
    """An int in the 64-bit range; None (the text stays text) beyond it, without converting
    thousands of digits (Python refuses more than 4300 and would crash)."""
    if len(digits) > 70:  # far beyond 64 bits in any base
        return None
    value = int(digits, base)
    return value if INT_MIN <= value <= INT_MAX else None


def resolve_tagged(tag: str, text: str) -> Any:
    """The value of a scalar with an explicit standard tag (`!!int 5`); ScalarProblem otherwise."""
    if tag == STR or tag == TIMESTAMP:
        return text
    if tag == NULL:
        if text in _NULLS:
            return None
        raise ScalarProblem(f"!!null value must be empty, ~ or null (actual: {short_value(text, 40)})")
    if tag == BOOL:
        if text in _BOOLS:
            return _BOOLS[text]
        raise ScalarProblem(f"!!bool value must be true or false (actual: {short_value(text, 40)})")
    if tag in (INT, FLOAT):
        number = _number(text)
        if isinstance(number, int) or (tag == FLOAT and isinstance(number, float)):
            return float(number) if tag == FLOAT else number
        what = "a whole number within 64 bits" if tag == INT else "a number"
        raise ScalarProblem(f"!!{tag.rsplit(':', 1)[1]} value must be {what} (actual: {short_value(text, 40)})")
    raise ScalarProblem(f"unsupported tag {display_tag(tag)}; a config uses plain YAML values "
                        "(remove the tag)")


def check_text(text: str) -> None:
    """Refuses characters YAML itself does not allow in text (they can only come from escapes such
    as "\\0" or a lone surrogate "\\ud800"): they break terminals, paths and shell commands."""
    bad = NOT_PRINTABLE.search(text)
    if bad is not None:
        raise ScalarProblem(f"contains {describe_char(bad.group())}, which a config value cannot hold")


def describe_char(char: str) -> str:
    """`a control character (U+0007)` / `a lone surrogate (U+D800)`, for messages."""
    code = ord(char)
    return f"{'a lone surrogate' if 0xD800 <= code <= 0xDFFF else 'a control character'} (U+{code:04X})"


def display_tag(tag: str) -> str:
    """`tag:yaml.org,2002:binary` -> `!!binary`, as the user wrote it."""
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag
