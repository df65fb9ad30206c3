"""Checks a plugin's object against the protocol it claims to satisfy, when the registry loads it.

`typing.runtime_checkable` only asks whether names exist. The engine relies on more: a method
the stage awaits must be `async def` (a plain function returning a list cannot be awaited), a
method must accept the arguments the stage passes (a provider written for an older contract
takes different ones), and a provider's layers are objects with their own methods. This reads
the protocol classes of `kubitect_core.contracts` (or a base class such as `Stage`) and reports,
in words, everything an object lacks, so the registry can name the plugin instead of a stage
failing halfway through a run.

A protocol member with a value in the protocol's body (`default: bool = False`) is optional, and
so is a method marked `@optional`: a capability some plugins have (a provider that can power a
host's machines off for a chaos test). The engine asks for it with `getattr(obj, name, None)`; when
a plugin has it, it is checked like any other method.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any

_MISSING = object()
_OPTIONAL = "__kubitect_optional__"


def optional(method: Any) -> Any:
    """Marks a protocol method as a capability a plugin may leave out (checked when present)."""
    setattr(method, _OPTIONAL, True)
    return method


def _is_protocol(cls: Any) -> bool:
    return isinstance(cls, type) and bool(getattr(cls, "_is_protocol", False))


def _contract_classes(contract: type) -> list[type]:
    """The classes whose bodies declare the contract: the protocol (or base class) and its bases."""
    return [c for c in contract.__mro__ if c is not object and c.__module__ != "typing"]


def _members(contract: type) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(methods by name, attribute types by name, optional names) declared by the contract."""
    methods: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    may_lack: set[str] = set()
    hints = typing.get_type_hints(contract)
    for cls in reversed(_contract_classes(contract)):
        for name, value in vars(cls).items():
            if name.startswith("_"):
                continue
            if inspect.isfunction(value):
                methods[name] = value
                if getattr(value, _OPTIONAL, False):
                    may_lack.add(name)
            elif not isinstance(value, (property, classmethod, staticmethod)):
                may_lack.add(name)
        for name in getattr(cls, "__annotations__", {}):
            if not name.startswith("_"):
                attributes[name] = hints.get(name, Any)
    for name in methods:
        attributes.pop(name, None)
    return methods, attributes, may_lack


def _placeholder_args(fn: Any) -> list[str]:
    params = list(inspect.signature(fn).parameters.values())[1:]  # without self
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _method_problem(name: str, want: Any, have: Any) -> str | None:
    if not callable(have):
        return f"'{name}' is not a method"
    want_async = inspect.iscoroutinefunction(want)
    if want_async and not inspect.iscoroutinefunction(have):
        return f"'{name}' must be a coroutine (async def), as the stage awaits it"
    if not want_async and inspect.iscoroutinefunction(have):
        return f"'{name}' must be a plain function (not async def)"
    args = _placeholder_args(want)
    try:
        inspect.signature(have).bind(*args)
    except TypeError:
        return f"'{name}' must accept ({', '.join(args)}), as the contract passes them"
    except ValueError:  # no signature to read (a builtin): trust it
        return None
    return None


def _type_problem(name: str, hint: Any, value: Any) -> str | None:
    origin = typing.get_origin(hint) or hint
    checks = {str: (str, "a string"), bool: (bool, "True or False"), tuple: ((tuple, list), "a tuple"),
              collections.abc.Mapping: (collections.abc.Mapping, "a mapping")}
    if origin in checks and not isinstance(value, checks[origin][0]):
        return f"'{name}' must be {checks[origin][1]} (it is {type(value).__name__})"
    return None


def contract_problems(obj: Any, contract: type, *, where: str = "") -> list[str]:
    """Everything `obj` lacks to satisfy `contract`; [] when it satisfies it.

    Attributes typed with another protocol (a provider's `network`, `storage`, `vms`) are checked
    against that protocol, their problems prefixed with the attribute's name.
    """
    methods, attributes, may_lack = _members(contract)
    problems: list[str] = []
    for name, hint in attributes.items():
        value = getattr(obj, name, _MISSING)
        if value is _MISSING:
            if name not in may_lack:
                problems.append(f"'{where}{name}' is missing")
        elif _is_protocol(hint):
            problems += contract_problems(value, hint, where=f"{where}{name}.")
        else:
            problem = _type_problem(f"{where}{name}", hint, value)
            if problem:
                problems.append(problem)
    for name, want in methods.items():
        have = getattr(obj, name, _MISSING)
        if have is _MISSING:
            if name not in may_lack:
                problems.append(f"method '{where}{name}' is missing")
            continue
        problem = _method_problem(f"{where}{name}", want, have)
        if problem:
            problems.append(problem)
    return problems
