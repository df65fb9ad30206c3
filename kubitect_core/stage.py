"""What a stage is: a thin step of the pipeline that asks one kind of plugin to converge a layer.

Stages know the order and the bookkeeping; plugins know the technology. A stage never imports a
plugin: it looks one up by name in the `Registry` the plugin manager built, and fails with a
clear message naming the installed choices when the one the config asks for is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kubitect_core.contracts import Change, StageContext

if TYPE_CHECKING:
    from kubitect_core.plugins import Registry


class StageError(Exception):
    """A stage could not do its work; the message is for the user (no traceback)."""


class StageSkipped(Exception):
    """A stage could not run here for a reason outside the config (e.g. no internet for installers).

    The engine records the stage as skipped with the reason, runs the remaining stages, and does
    not mark the config as applied, so the next apply tries the skipped stage again.
    """


class MissingPlugin(StageError):
    """The config asks for an implementation that no installed plugin provides."""

    def __init__(self, stage: str, kind: str, wanted: str, installed: Sequence[str]):
        choices = ", ".join(sorted(installed)) or "none"
        super().__init__(
            f"stage '{stage}' needs the {kind} '{wanted}', which no installed plugin provides "
            f"(installed: {choices})"
        )
        self.wanted = wanted


class Stage:
    """Base class of pipeline stages.

    `requires` names stages that must have completed at least once before this one may run on
    its own (`kubitect run --stage`). `after` places a third party's stage in the pipeline.
    """

    name: str = ""
    description: str = ""
    requires: tuple[str, ...] = ()
    after: str | None = None
    # Whether destroy must run even when this stage has no record (never ran, or the state file
    # was lost). True for layers whose plugins find their objects by tags (VMs, networks, disks);
    # false for layers that live on those VMs and vanish with them.
    destroy_without_record: bool = False
    # Whether this stage's plugins see the config's topology instead of the as-built one
    # (`StageContext.topology`): true for the machine layers, which converge the machines to the
    # config and keep what they made in their own record.
    config_topology: bool = False

    async def plan(self, ctx: StageContext, registry: Registry) -> list[Change]:
        return []

    async def apply(self, ctx: StageContext, registry: Registry) -> list[Change]:
        return []

    async def destroy(self, ctx: StageContext, registry: Registry) -> list[Change]:
        return []

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


def order_stages(stages: Sequence[Stage], builtin_order: Sequence[str]) -> list[Stage]:
    """The pipeline order: built-ins in their fixed order, each extra stage right after its `after`.

    A stage whose `after` names no known stage goes before verify (or last), so a third party's
    typo cannot silently drop its stage.
    """
    by_name = {s.name: s for s in stages}
    ordered = [by_name[n] for n in builtin_order if n in by_name]
    extras = [s for s in stages if s.name not in builtin_order]
    for stage in extras:
        names = [s.name for s in ordered]
        if stage.after in names:
            ordered.insert(names.index(stage.after) + 1, stage)
        elif "verify" in names:
            ordered.insert(names.index("verify"), stage)
        else:
            ordered.append(stage)
    return ordered


def held_layer(ctx: StageContext, stage: str) -> list[Change] | None:
    """The plan/apply result of a layer that Kubitect (Go) installed and `kubitect adopt` took
    over with the machines, else None.

    Why held: kubitect's own plugin would configure such a layer differently (another HAProxy
    config, another CNI version than Kubespray's), so running it over what Kubitect installed is a
    rebuild, not a convergence. The layer stays as it is, and plan and apply say so every time.
    """
    adopted = ctx.record.get("adopted")
    if not isinstance(adopted, dict):
        return None
    what = adopted.get("installed") or stage
    return [Change("keep", stage, ctx.cluster, None,
                   f"held: {what}, installed by {adopted.get('from', 'another tool')} and adopted with the VMs; "
                   "kubitect leaves it as it is (nodes it adds are not joined, nodes it removes are not drained)")]


class DelegatingStage(Stage):
    """A stage served by one plugin object chosen from the config (load balancer, installer)."""

    def select(self, ctx: StageContext, registry: Registry):
        raise NotImplementedError

    async def plan(self, ctx: StageContext, registry: Registry) -> list[Change]:
        held = held_layer(ctx, self.name)
        return held if held is not None else await self.select(ctx, registry).plan(ctx)

    async def apply(self, ctx: StageContext, registry: Registry) -> list[Change]:
        held = held_layer(ctx, self.name)
        return held if held is not None else await self.select(ctx, registry).apply(ctx)

    async def destroy(self, ctx: StageContext, registry: Registry) -> list[Change]:
        return await self.select(ctx, registry).destroy(ctx)
