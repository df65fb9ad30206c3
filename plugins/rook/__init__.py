"""The Rook addon (addons.rook): a stage after kubernetes and a conformance module, contributed
through the `kubitect` entry point exactly as a third party's plugin would be."""

from __future__ import annotations

from pathlib import Path

from kubitect_core.sdk import hookimpl

from .addon import RookStage


@hookimpl
def kubitect_register_stages():
    return [RookStage()]


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    return [str(Path(__file__).parent / "check_rook.py")]
