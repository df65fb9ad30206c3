"""verify: conformance checks (pytest-testinfra) against the live cluster, reports saved."""

from __future__ import annotations

from kubitect_core.contracts import Change, StageContext
from kubitect_core.stage import Stage


class VerifyStage(Stage):
    name = "verify"
    description = "testinfra conformance suite, including measured VIP failover"
    requires = ("vms",)

    async def apply(self, ctx: StageContext, registry) -> list[Change]:
        from kubitect_core.verify import run_conformance

        return await run_conformance(ctx, registry)
