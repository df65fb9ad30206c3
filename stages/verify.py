"""verify: conformance checks (pytest-testinfra) against the live cluster, reports saved.

What must be true after it: every check in the contributed conformance modules passed (or was
skipped with a reason), and the VIP failover matrix measured every gap within its budget (unless
`--no-failover`). The work is in `kubitect_core.verify.run_conformance`; see its module docstring
for the files it writes and the report format.
"""

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
