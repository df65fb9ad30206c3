"""kubernetes: the cluster installed behind the recorded endpoint, kubeconfig fetched."""

from __future__ import annotations

import asyncio

from kubitect_core.contracts import Change
from kubitect_core.stage import DelegatingStage, MissingPlugin, StageSkipped, held_layer


class KubernetesStage(DelegatingStage):
    name = "kubernetes"
    description = "Kubernetes installed by the installer named in kubernetes.manager"
    requires = ("loadbalancers",)

    def select(self, ctx, registry):
        wanted = ctx.config.kubernetes.manager
        if wanted not in registry.installers:
            raise MissingPlugin(self.name, "Kubernetes installer", wanted, list(registry.installers))
        return registry.installers[wanted]

    async def apply(self, ctx, registry) -> list[Change]:
        """Installs Kubernetes; skipped (not failed) when the installer's sources are unreachable.

        Installers download packages or binaries. On a machine without internet access that is
        not the config's fault, and the other stages (load balancers, verify) still mean
        something, so the stage is recorded as skipped with the installer's reason.
        """
        held = held_layer(ctx, self.name)
        if held is not None:
            return held
        installer = self.select(ctx, registry)
        reason = await asyncio.to_thread(installer.internet_reason, ctx)
        if reason:
            raise StageSkipped(f"Kubernetes cannot be installed from here: {reason}")
        return await installer.apply(ctx)
