"""A module imported on first use, so that a plugin's heavy dependency costs nothing until needed.

`kubitect --version` and `kubitect validate` load every plugin's entry module (the registry
checks each plugin's offers against the contract), but neither talks to a node or a hypervisor:
asyncssh, libvirt, pycdlib, jinja2 and cryptography have no business on that path. A module that
needs one of them writes

    asyncssh = lazy_import("asyncssh")

instead of `import asyncssh`, and uses it exactly as before; the real import happens at the
first attribute access (a call, an `except asyncssh.Error`, an isinstance). Annotations stay
free with `from __future__ import annotations`. Unlike importlib's LazyLoader, nothing is put in
`sys.modules` before the import really happens, so "is asyncssh loaded?" keeps its plain meaning
(tests/unit/test_fast_start.py asks it).
"""

from __future__ import annotations

__all__ = ["LazyModule", "lazy_import"]

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module until an attribute is first read; then is a thin view of it.

    Reads, writes (a test's monkeypatch) and `vars()` all reach the real module once loaded.
    """

    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_lazy_name", name)
        object.__setattr__(self, "_lazy_module", None)

    def _load(self) -> ModuleType:
        module = object.__getattribute__(self, "_lazy_module")
        if module is None:
            module = importlib.import_module(object.__getattribute__(self, "_lazy_name"))
            object.__setattr__(self, "_lazy_module", module)
        return module

    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        return vars(self._load())

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._load(), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(self._load(), attr)

    def __repr__(self) -> str:
        loaded = object.__getattribute__(self, "_lazy_module") is not None
        return f"<lazy module {self._lazy_name!r} ({'loaded' if loaded else 'not loaded yet'})>"


def lazy_import(name: str) -> Any:
    """`name` (e.g. "asyncssh", "cryptography.x509"), imported when first used, not now."""
    return LazyModule(name)
