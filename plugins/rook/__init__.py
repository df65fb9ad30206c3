"""The Rook addon (addons.rook): a stage after kubernetes, a conformance module, and the drain of a
leaving worker's OSDs, contributed through the `kubitect` entry point exactly as a third party's
plugin would be."""

from __future__ import annotations

from pathlib import Path

from kubitect_core.sdk import Change, Node, StageContext, hookimpl

from . import drain
from .addon import RookStage


@hookimpl
def kubitect_register_stages():
    return [RookStage()]


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    return [str(Path(__file__).parent / "check_rook.py")]


@hookimpl
def kubitect_nodes_leaving(ctx: StageContext, nodes: list[Node], dry_run: bool) -> list[Change]:
    """Moves Ceph's data off leaving workers with OSDs first, or refuses with the numbers (see `drain`)."""
    return drain.run_blocking(drain.nodes_leaving(ctx, nodes, dry_run))
