"""An example third-party load balancer for kubitect: `first-master`.

The smallest load balancer that is honest about what it is: no VIP, no machines, nothing
installed anywhere. The control-plane endpoint is the first master's own API server, so a
cluster with several masters keeps working when another master fails, but not when the first
one does (kcli's setup without a VIP has the same property). Useful for labs and single-master
clusters; the guide (docs/plugins-load-balancer.md) walks through it line by line.

What a load balancer owes kubitect (kubitect_core.sdk.LoadBalancer, checked when it loads):

- `name` (the word `cluster.nodes.loadBalancer.implementation` selects it by);
- async `plan`, `apply`, `destroy(ctx)` returning `Change`s; a second apply returns only "keep";
- apply records `ctx.record["endpoint"]` and `ctx.record["port"]`: every installer builds its
  join addresses and the kubeconfig from those two;
- optional: `runs_on` and `vip_use`, which validation checks the config against (here: no
  load balancer instances, no VIP), and `api_port` for the config views.

Its conformance module (`conformance_first_master.py`) adds one check to `kubitect verify`.
Everything it imports of kubitect comes from `kubitect_core.sdk`.
"""

from __future__ import annotations

from pathlib import Path

from kubitect_core.sdk import Change, StageContext, StageError, hookimpl
from kubitect_core.sdk.kube import API_SERVER_PORT

NAME = "first-master"


class FirstMaster:
    """The endpoint is the first master's API server, at the port it binds."""

    name = NAME
    runs_on = "masters"  # no machines of its own: load balancer instances are refused
    vip_use = "unused"  # nothing would hold a VIP: one in the config is refused
    api_port = API_SERVER_PORT

    def _endpoint(self, ctx: StageContext) -> str:
        masters = ctx.topology.masters
        if not masters or not masters[0].ip:
            raise StageError("first-master: the first master has no address yet (run the vms stage first)")
        return masters[0].ip

    async def plan(self, ctx: StageContext) -> list[Change]:
        """Dry run: is the recorded endpoint the one apply would record?"""
        first = ctx.topology.masters[0] if ctx.topology.masters else None
        wanted = first.ip if first and first.ip else "the first master (address not known yet)"
        action = "keep" if ctx.record.get("endpoint") == wanted else "create" if not ctx.record else "change"
        return [Change(action, "endpoint", f"{wanted}:{API_SERVER_PORT}", detail="the first master's API server")]

    async def apply(self, ctx: StageContext) -> list[Change]:
        """Record the endpoint; nothing runs anywhere."""
        endpoint = self._endpoint(ctx)
        before = (ctx.record.get("endpoint"), ctx.record.get("port"))
        ctx.record.update({"implementation": NAME, "endpoint": endpoint, "port": API_SERVER_PORT, "vip": None,
                           "nodes": {}})
        action = "keep" if before == (endpoint, API_SERVER_PORT) else "create" if before == (None, None) else "change"
        return [Change(action, "endpoint", f"{endpoint}:{API_SERVER_PORT}", detail="the first master's API server")]

    async def destroy(self, ctx: StageContext) -> list[Change]:
        """Nothing was installed: forget the record."""
        gone = ctx.record.get("endpoint")
        ctx.record.clear()
        return [Change("delete", "endpoint", str(gone))] if gone else []


@hookimpl
def kubitect_load_balancers() -> dict[str, FirstMaster]:
    return {NAME: FirstMaster()}


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    return [str(Path(__file__).with_name("conformance_first_master.py"))]
