"""validate: the config is valid (already checked on load) and the machines can take it (preflight)."""

from __future__ import annotations

from kubitect_stages.machines import hosts_by_provider

from kubitect_core.contracts import Change, StageContext
from kubitect_core.stage import Stage, StageError


class ValidateStage(Stage):
    name = "validate"
    description = "config rules and machine preflight (keys, hosts, libvirt, bridges)"

    async def plan(self, ctx: StageContext, registry) -> list[Change]:
        return []

    async def apply(self, ctx: StageContext, registry) -> list[Change]:
        """Runs every preflight check and fails with all problems at once, before anything changes."""
        from kubitect_core.config.preflight import preflight_config

        problems = [f"{p.path}: {p.message}" for p in preflight_config(ctx.config)]
        if not problems:  # with a missing key file, contacting the hosts would only fail again
            for provider, hosts in hosts_by_provider(ctx, registry, "validate").items():
                problems += await provider.preflight(ctx, hosts)
        if problems:
            raise StageError("preflight found problems:\n  - " + "\n  - ".join(problems))
        return []
