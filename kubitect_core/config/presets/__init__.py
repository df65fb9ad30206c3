"""Ready-made configs shipped with the package (`kubitect list presets`, `export preset`)."""

from __future__ import annotations

from importlib import resources

_PACKAGE = "kubitect_core.config.presets"


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    files = resources.files(_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of one preset; KeyError (listing the choices) for an unknown name."""
    if name not in list_presets():
        raise KeyError(f"unknown preset '{name}'; available presets: {', '.join(list_presets())}")
    return resources.files(_PACKAGE).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
