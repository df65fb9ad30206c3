"""kubernetes: the cluster installed behind the recorded endpoint, kubeconfig fetched."""

from __future__ import annotations

from kubitect_core.stage import DelegatingStage, MissingPlugin


class KubernetesStage(DelegatingStage):
    name = "kubernetes"
    description = "Kubernetes installed by the installer named in kubernetes.manager"
    requires = ("loadbalancers",)

    def select(self, ctx, registry):
        wanted = ctx.config.kubernetes.manager
        if wanted not in registry.installers:
            raise MissingPlugin(self.name, "Kubernetes installer", wanted, list(registry.installers))
        return registry.installers[wanted]
