"""loadbalancers: the control-plane endpoint (VIP and load balancers) in front of the masters."""

from __future__ import annotations

from kubitect_core.contracts import StageContext
from kubitect_core.stage import DelegatingStage, MissingPlugin


def implementation_name(ctx: StageContext) -> str:
    """The implementation the config names (resolved: the default load balancer when omitted)."""
    return ctx.config.cluster.nodes.load_balancer.implementation


class LoadBalancersStage(DelegatingStage):
    name = "loadbalancers"
    description = "HAProxy + keepalived (or another implementation) and the API endpoint"
    requires = ("vms",)

    def select(self, ctx, registry):
        wanted = implementation_name(ctx)
        if wanted not in registry.load_balancers:
            raise MissingPlugin(self.name, "load balancer implementation", wanted, list(registry.load_balancers))
        return registry.load_balancers[wanted]
