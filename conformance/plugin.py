"""The built-in conformance plugin: contributes the `test_*.py` modules of this package."""

from pathlib import Path

from kubitect_core.hookspecs import hookimpl


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    return sorted(str(p) for p in Path(__file__).parent.glob("test_*.py"))
