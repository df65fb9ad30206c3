"""The engine's removal phase: nodes gone from the config leave the cluster before their machines go.

Real: the engine, the change rules, the confirmation rules and the record. TEST DOUBLES (tests/fixtures
kubitect_fakes, extended here): a vms layer that records nodes like a real provider and deletes
the machines of nodes no longer in the config, an installer that records its members and
implements `remove_nodes`, and a plugin implementing the `kubitect_nodes_leaving` hook. Every
call goes to one log, so the order across them is asserted.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import yaml

from kubitect_core.contracts import Change
from kubitect_core.hookspecs import hookimpl
from kubitect_core.stage import StageError


class LeavingHook:
    """A plugin that makes way for leaving nodes (what the Rook addon does for OSDs)."""

    def __init__(self, fakes):
        self.fakes = fakes

    @hookimpl
    async def kubitect_nodes_leaving(self, ctx, nodes, dry_run):  # async: plugins need SSH here
        await asyncio.sleep(0)
        self.fakes._log(op="hook", nodes=[n.name for n in nodes], dry_run=dry_run,
                        record_has=sorted(ctx.record.get("nodes", {})))
        return [Change("delete", "osd", f"osd-on-{n.name}") for n in nodes if n.role == "worker"]


@pytest.fixture
def scale(fake_env, fakes, monkeypatch):
    """The fakes with node records, machine deletion, installer members and remove_nodes."""
    orig_layer = fakes.FakeProvider.apply_layer

    async def apply_layer(self, layer, ctx, hosts):
        out = await orig_layer(self, layer, ctx, hosts)
        if layer == "vms":
            mine = {n.name: n for n in ctx.topology.nodes if n.host in hosts}
            nodes = ctx.record.setdefault("nodes", {})
            for gone in [k for k in nodes if k not in mine]:
                fakes._log(op="delete-machine", name=gone)
                del nodes[gone]
            for n in mine.values():
                nodes[n.name] = {"name": n.name, "host": n.host, "ip": n.ip, "domain": n.name}
        return out

    orig_kube = fakes.FakeInstaller.apply

    async def kube_apply(self, ctx):
        out = await orig_kube(self, ctx)
        ctx.record["nodes"] = {n.name: {"role": n.role, "state": "joined"} for n in ctx.topology.nodes
                               if n.role != "lb"}
        return out

    async def remove_nodes(self, ctx, nodes, dry_run):
        fakes._log(op="remove_nodes", nodes=[n.name for n in nodes], dry_run=dry_run)
        if not dry_run and os.environ.get("SCALE_FAIL_DRAIN"):
            raise StageError(f"drain {nodes[0].name} did not finish within 5s; the pods that block it: default/web-1")
        if not dry_run:
            for n in nodes:
                ctx.record["nodes"].pop(n.name)
                ctx.checkpoint()
        return [Change("delete", "node", n.name, n.host, "cordoned, drained, kubectl delete node") for n in nodes]

    monkeypatch.setattr(fakes.FakeProvider, "apply_layer", apply_layer)
    monkeypatch.setattr(fakes.FakeInstaller, "apply", kube_apply)
    monkeypatch.setattr(fakes.FakeInstaller, "remove_nodes", remove_nodes, raising=False)
    return fake_env


def _engine(fakes, home, answers=None):
    from kubitect_core.engine import Engine
    from kubitect_core.plugins import load_registry

    asked = []

    def confirm(c):
        asked.append(c)
        if c.explicit:  # as the CLI: only the flag or an interactive yes answers it
            return bool(answers and answers.get(c.explicit))
        return True

    engine = Engine(home, load_registry(extra_plugins=[LeavingHook(fakes)]), confirm=confirm)
    return engine, asked


def _config(env, name: str, drop: dict[str, list[int]]) -> object:
    data = yaml.safe_load((env / "ha.yaml").read_text())
    for role, ids in drop.items():
        section = data["cluster"]["nodes"][role]
        section["instances"] = [i for i in section["instances"] if i["id"] not in ids]
    path = env / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _ops(fakes, since: int = 0) -> list[tuple]:
    out = []
    for c in fakes.calls()[since:]:
        if c.get("op") in ("hook", "remove_nodes"):
            out.append((c["op"], tuple(c["nodes"]), c["dry_run"]))
        elif c.get("op") == "delete-machine":
            out.append(("delete-machine", c["name"]))
    return out


def test_a_removed_worker_is_made_way_for_then_drained_then_its_machine_deleted(scale, fakes):
    from kubitect_core.engine import Options

    engine, _ = _engine(fakes, scale / "home")
    asyncio.run(engine.apply(scale / "ha.yaml", Options()))
    mark = len(fakes.calls())
    smaller = _config(scale, "smaller.yaml", {"worker": [3]})
    outcome = asyncio.run(engine.apply(smaller, Options(action="scale", flags={"delete_data_disks": True})))
    w3 = "kubitect-ha-worker-3"
    assert _ops(fakes, mark) == [("hook", (w3,), False), ("remove_nodes", (w3,), False), ("delete-machine", w3)]
    stages = [name for name, _, _ in outcome.stages]
    assert stages.index("remove-nodes") < stages.index("network") < stages.index("vms")
    removal = dict((n, c) for n, _, c in outcome.stages)["remove-nodes"]
    assert [str(c) for c in removal] == [f"delete osd osd-on-{w3}",
                                         f"delete node {w3} on host5 (cordoned, drained, kubectl delete node)"]
    hook_call = next(c for c in fakes.calls()[mark:] if c.get("op") == "hook")
    assert w3 in hook_call["record_has"], "the hook sees the kubernetes stage's record (before the drain)"
    # a second apply has nothing left to remove
    again = asyncio.run(engine.apply(smaller, Options(action="scale")))
    assert again.nothing_to_do


def test_plan_lists_the_removal_steps_and_touches_nothing(scale, fakes):
    from kubitect_core.engine import Options

    engine, _ = _engine(fakes, scale / "home")
    asyncio.run(engine.apply(scale / "ha.yaml", Options()))
    mark = len(fakes.calls())
    plan = asyncio.run(engine.plan(_config(scale, "smaller.yaml", {"worker": [2, 3]}), Options(action="scale")))
    removal = dict((n, c) for n, _, c in plan.stages)["remove-nodes"]
    assert [(c.action, c.kind, c.name) for c in removal if c.kind == "node"] == [
        ("delete", "node", "kubitect-ha-worker-2"), ("delete", "node", "kubitect-ha-worker-3")]
    assert _ops(fakes, mark) == [("hook", ("kubitect-ha-worker-2", "kubitect-ha-worker-3"), True),
                                 ("remove_nodes", ("kubitect-ha-worker-2", "kubitect-ha-worker-3"), True)]


def test_a_failed_drain_stops_before_the_machine_is_deleted_and_a_rerun_converges(scale, fakes, monkeypatch):
    from kubitect_core.engine import Options, StageFailed
    from kubitect_core.state import ClusterState

    engine, _ = _engine(fakes, scale / "home")
    asyncio.run(engine.apply(scale / "ha.yaml", Options()))
    smaller = _config(scale, "smaller.yaml", {"worker": [3]})
    monkeypatch.setenv("SCALE_FAIL_DRAIN", "1")
    mark = len(fakes.calls())
    with pytest.raises(StageFailed, match="(?s)remove-nodes.*default/web-1"):
        asyncio.run(engine.apply(smaller, Options(action="scale", flags={"delete_data_disks": True})))
    assert not [op for op in _ops(fakes, mark) if op[0] == "delete-machine"], "the machine must stay"
    record = ClusterState(scale / "home", "kubitect-ha").load_record()
    assert "kubitect-ha-worker-3" in record["stages"]["kubernetes"]["data"]["nodes"]
    monkeypatch.delenv("SCALE_FAIL_DRAIN")
    mark = len(fakes.calls())
    asyncio.run(engine.apply(smaller, Options(action="scale", flags={"delete_data_disks": True})))
    assert _ops(fakes, mark)[-2:] == [("remove_nodes", ("kubitect-ha-worker-3",), False),
                                      ("delete-machine", "kubitect-ha-worker-3")]


def test_data_disks_of_removed_workers_need_the_explicit_flag(scale, fakes):
    from kubitect_core.engine import Aborted, Options

    engine, asked = _engine(fakes, scale / "home")
    asyncio.run(engine.apply(scale / "ha.yaml", Options()))
    mark = len(fakes.calls())
    smaller = _config(scale, "smaller.yaml", {"worker": [3]})
    with pytest.raises(Aborted, match=r"removed nodes have data disks \(kubitect-ha-worker-3/rook\)\. "
                                      "Pass --delete-data-disks"):
        asyncio.run(engine.apply(smaller, Options(action="scale", auto_approve=True)))
    assert _ops(fakes, mark) == [], "nothing was drained or deleted"
    assert asked[-1].explicit == "--delete-data-disks"
    assert "node kubitect-ha-worker-3 will be deleted, with its disks and the data on them" in asked[-1].data_loss
    # an interactive yes (or the flag) lets it go ahead
    engine, asked = _engine(fakes, scale / "home", answers={"--delete-data-disks": True})
    asyncio.run(engine.apply(smaller, Options(action="scale")))
    assert ("delete-machine", "kubitect-ha-worker-3") in _ops(fakes, mark)


def test_a_removed_load_balancer_goes_through_the_hook_but_not_the_installer(scale, fakes):
    from kubitect_core.engine import Options

    engine, _ = _engine(fakes, scale / "home")
    asyncio.run(engine.apply(scale / "ha.yaml", Options()))
    mark = len(fakes.calls())
    asyncio.run(engine.apply(_config(scale, "smaller.yaml", {"loadBalancer": [2]}), Options(action="scale")))
    assert _ops(fakes, mark) == [("hook", ("kubitect-ha-lb-2",), False), ("delete-machine", "kubitect-ha-lb-2")]


def test_machines_that_never_ran_kubernetes_are_removed_without_asking_the_installer(scale, fakes, monkeypatch):
    from kubitect_core.engine import Options

    monkeypatch.setenv("KUBITECT_FAKE_OFFLINE", "no internet here")  # the kubernetes stage is skipped
    engine, _ = _engine(fakes, scale / "home")
    asyncio.run(engine.run_stages(scale / "ha.yaml", ["network", "storage", "vms"], Options()))
    mark = len(fakes.calls())
    smaller = _config(scale, "smaller.yaml", {"worker": [3]})
    asyncio.run(engine.run_stages(smaller, ["network", "storage", "vms"], Options()))
    assert _ops(fakes, mark) == [("hook", ("kubitect-ha-worker-3",), False), ("delete-machine", "kubitect-ha-worker-3")]


def test_an_installer_that_cannot_remove_nodes_stops_the_scale_in(fake_env, fakes):
    from kubitect_core.engine import Options, StageFailed

    assert not hasattr(fakes.FakeInstaller, "remove_nodes")
    engine, _ = _engine(fakes, fake_env / "home")
    asyncio.run(engine.apply(fake_env / "ha.yaml", Options()))
    # the plain fake records no members: make it look like a cluster with joined nodes
    from kubitect_core.state import ClusterState

    state = ClusterState(fake_env / "home", "kubitect-ha")
    record = state.load_record()
    record["stages"]["vms"]["data"]["libvirt"]["nodes"] = {
        "kubitect-ha-worker-3": {"name": "kubitect-ha-worker-3", "host": "host5", "ip": "10.10.13.22"}}
    record["stages"]["kubernetes"]["data"]["nodes"] = {"kubitect-ha-worker-3": {"role": "worker"}}
    state.save_record(record)
    with pytest.raises(StageFailed, match="cannot take nodes out of the cluster"):
        asyncio.run(engine.apply(_config(fake_env, "smaller.yaml", {"worker": [3]}),
                                 Options(action="scale", flags={"delete_data_disks": True})))
