"""`kubitect replace --node NAME`: a failed node rebuilt in place, through the normal pipeline.

For a control plane, in the order KubeOne and Kubespray use to recover one:

1. through a control plane that stays, its etcd member is removed (refused, with the numbers,
   when etcd has no quorum without it), and its Kubernetes Node is deleted;
2. its machine is deleted by the machine stages (network, storage, vms) run with a topology
   that lacks just this node (the providers forget its pinned host key with it);
3. every stage runs again with the applied config: the machine is created afresh, the load
   balancers keep their backends, and the installer joins the new machine like any new node
   (for a control plane with a fresh certificate key and re-uploaded certificates: the ones
   uploaded at creation expired two hours after it), then verify.

The cluster's config does not change, so no change rules apply. A worker can be replaced the
same way (its Node is deleted; there is no etcd member). The run holds the cluster lock, so no
apply interleaves; an interrupted replace is finished by running it again (each step tolerates
work already done) or by `kubitect apply`, which re-creates the missing machine.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import TYPE_CHECKING

from kubitect_core.contracts import Change, StageContext
from kubitect_core.kube import control_plane, node_ops
from kubitect_core.kube.steps import node_pool
from kubitect_core.topology import Node

if TYPE_CHECKING:
    from kubitect_core.engine import Engine, Options, Outcome

KUBEADM_KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
K3S_KUBECTL = "k3s kubectl"


def find_node(topology, name: str) -> Node:
    """The node named `name` or its short name (`master-2`), else an error listing the choices."""
    from kubitect_core.engine import EngineError

    for n in topology.nodes:
        if name in (n.name, n.name.removeprefix(f"{topology.cluster}-")):
            return n
    choices = ", ".join(n.name.removeprefix(f"{topology.cluster}-") for n in topology.nodes if n.role != "lb")
    raise EngineError(f"no node '{name}' in cluster '{topology.cluster}'; its nodes are: {choices}")


async def take_out(ctx: StageContext, node: Node) -> list[Change]:
    """Step 1: the node's etcd member (control planes) and its Kubernetes Node, through a master that stays."""
    from kubitect_core.engine import EngineError

    manager = ctx.config.kubernetes.manager
    kubectl_prefix = K3S_KUBECTL if manager == "k3s" else KUBEADM_KUBECTL
    changes: list[Change] = []
    async with node_pool(ctx) as pool:
        staying, r = await control_plane.staying_master(pool, ctx.topology.masters, {node.name})
        if node.role == "master":
            if manager == "k3s":
                raise EngineError("replacing a k3s server is not supported yet (its embedded etcd member is "
                                  "removed by k3s itself when the node is deleted): remove it with --action scale "
                                  "and add it back")
            ctx.progress(node.name, f"removing its etcd member (through {staying.name})")
            change = await control_plane.remove_member(r, node)
            ctx.progress(node.name, change.detail)
            changes.append(change)
        kubectl = node_ops.RemoteKubectl(r, kubectl_prefix)
        ctx.progress(node.name, "deleting its Kubernetes node")
        try:
            await node_ops.delete_node(kubectl, node.name)
            changes.append(Change("delete", "node", node.name, node.host, "kubectl delete node"))
        except node_ops.NodeNotFound:
            changes.append(Change("keep", "node", node.name, node.host, "already gone from the cluster"))
    (ctx.record.get("nodes") or {}).pop(node.name, None)
    (ctx.record.get("labels") or {}).pop(node.name, None)
    ctx.checkpoint()
    return changes


async def replace_node(engine: Engine, cluster: str, name: str, opts: Options) -> Outcome:
    """Runs steps 1-3 of the module docstring under the cluster lock; returns what each step did."""
    import time

    from kubitect_core.engine import EngineError, Outcome, StageFailed, _record, describe_error

    state = engine._state(cluster, "replace")
    text = state.applied_text()
    if text is None:
        raise EngineError(f"cluster '{cluster}' has never been applied (in {state.dir.parent}): nothing to replace")
    loaded = engine.load_raw(text, str(state.applied_path))
    node = find_node(loaded.topology, name)
    if node.role == "lb":
        raise EngineError(f"{node.name} is a load balancer: it holds no cluster state, so `kubitect apply` after "
                          "deleting its machine rebuilds it; replace is for masters and workers")
    registry = engine.registry
    outcome = Outcome(cluster)
    with state.lock(opts.wait_lock):
        record = _record(state)
        ssh = engine._ssh(state, loaded, create=False)

        def save() -> None:
            state.save_record(record)

        with engine._run_log(state, "replace"):
            kube_stage = registry.stage("kubernetes")
            ctx = engine._context(state, loaded, record, kube_stage, ssh, opts, save=save)
            built = next(n for n in ctx.topology.nodes if n.name == node.name)
            t0 = time.monotonic()
            where = {"cluster": cluster, "stage": "replace", "action": "apply", "cluster_dir": state.dir}
            engine.hook.kubitect_stage_started(**where)
            try:
                changes = await take_out(ctx, built)
            except Exception as exc:
                detail = describe_error(exc)
                engine.hook.kubitect_stage_finished(**where, ok=False, seconds=time.monotonic() - t0, changes=[],
                                                    error=detail)
                if isinstance(exc, EngineError):
                    raise
                raise StageFailed("replace", "apply", detail) from exc
            engine.hook.kubitect_stage_finished(**where, ok=True, seconds=time.monotonic() - t0, changes=changes,
                                                error=None)
            outcome.stages.append(("replace", time.monotonic() - t0, changes))
            without = SimpleNamespace(
                config=loaded.config, extensions=loaded.extensions,
                topology=dataclasses.replace(loaded.topology,
                                             nodes=tuple(n for n in loaded.topology.nodes if n.name != node.name)))
            machine_stages = [s for s in registry.stages if s.config_topology]
            await engine._run_stages(state, without, record, ssh, machine_stages, "apply", opts, outcome)
            await engine._run_stages(state, loaded, record, ssh, registry.stages, "apply", opts, outcome)
    return outcome
