"""Node lifecycle primitives (kubitect_core.sdk.kube: cordon, uncordon, drain, delete_node,
wait_node_ready) against the kubectl TEST DOUBLE (tests/lab/doubles/kube_double.py), run here as
a local process on a state directory (KUBE_DOUBLE_STATE) instead of on a lab node.

What is real: the primitives, their arguments and error handling. What is a double: kubectl and
the cluster behind it (nodes, pods, PodDisruptionBudgets), modelled on kubectl's documented
behaviour so that order matters (a cordoned node shows SchedulingDisabled, a budget blocks an
eviction, deleting an unknown node fails with NotFound).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from kubitect_core.sdk import Result, kube

DOUBLE = Path(__file__).resolve().parents[1] / "lab" / "doubles" / "kube_double.py"


class LocalKubectl:
    """The kubectl double as a local process: a `kube.Kubectl` runner for the primitives."""

    def __init__(self, state: Path):
        self.state = state
        (state / "version").write_text("v1.34.2\n")
        self.exe = state / "kubectl"
        self.exe.symlink_to(DOUBLE)
        self.env = {**os.environ, "KUBE_DOUBLE_STATE": str(state)}

    async def __call__(self, args, *, stdin=None, timeout=None) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(self.exe), *args, env=self.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout)
        return Result(proc.returncode, out.decode(), err.decode())

    def run(self, *args) -> Result:
        return asyncio.run(self(list(args), timeout=60))

    def plant(self, **objects) -> None:
        import subprocess
        subprocess.run([sys.executable, str(DOUBLE), "plant", json.dumps(objects)], env=self.env, check=True,
                       capture_output=True)

    def state_of(self) -> dict:
        import subprocess
        out = subprocess.run([sys.executable, str(DOUBLE), "state"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    def calls(self) -> list[list[str]]:
        path = self.state / "calls.jsonl"
        return [json.loads(line)["argv"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def kubectl(tmp_path) -> LocalKubectl:
    k = LocalKubectl(tmp_path)
    k.plant(nodes={"m-1": {"control_plane": True}, "w-1": {}, "w-2": {}})
    return k


def web(name: str, node: str, **extra) -> dict:
    return {"name": name, "node": node, "labels": {"app": "web"}, "owner": "ReplicaSet", **extra}


# ------------------------------------------------------------------ the double, as kubectl documents it


def test_double_cordon_shows_scheduling_disabled_and_uncordon_clears_it(kubectl):
    assert kubectl.run("cordon", "w-1").stdout.strip() == "node/w-1 cordoned"
    assert kubectl.run("cordon", "w-1").stdout.strip() == "node/w-1 already cordoned"
    table = kubectl.run("get", "nodes").stdout
    row = next(line for line in table.splitlines() if line.startswith("w-1 "))
    assert "Ready,SchedulingDisabled" in row
    assert "SchedulingDisabled" not in next(line for line in table.splitlines() if line.startswith("w-2 "))
    assert kubectl.run("uncordon", "w-1").stdout.strip() == "node/w-1 uncordoned"
    assert "SchedulingDisabled" not in kubectl.run("get", "nodes").stdout


def test_double_delete_of_unknown_node_fails_like_kubectl(kubectl):
    res = kubectl.run("delete", "node", "ghost")
    assert res.exit_status == 1
    assert res.stderr.strip() == 'Error from server (NotFound): nodes "ghost" not found'
    assert kubectl.run("delete", "node", "w-2").stdout.strip() == 'node "w-2" deleted'
    assert kubectl.run("delete", "node", "w-2").exit_status == 1  # gone now: NotFound again
    assert kubectl.run("delete", "node", "w-2", "--ignore-not-found").exit_status == 0


def test_double_drain_refuses_bare_daemonset_and_emptydir_pods_without_their_flags(kubectl):
    kubectl.plant(pods=[{"name": "bare", "node": "w-1", "owner": None},
                        {"name": "proxy-x", "namespace": "kube-system", "node": "w-1", "owner": "DaemonSet"},
                        web("cache-1", "w-1", emptydir=True)])
    res = kubectl.run("drain", "w-1")
    assert res.exit_status == 1
    assert "cannot delete Pods declare no controller (use --force to override): default/bare" in res.stderr
    assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/proxy-x" \
        in res.stderr
    assert "cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache-1" \
        in res.stderr
    assert kubectl.state_of()["nodes"]["w-1"]["unschedulable"] is True  # drain cordons first, and it stays


# ------------------------------------------------------------------ the primitives


def test_cordon_and_uncordon_are_idempotent_and_visible(kubectl):
    asyncio.run(kube.cordon(kubectl, "w-1"))
    asyncio.run(kube.cordon(kubectl, "w-1"))
    state = asyncio.run(kube.node_state(kubectl, "w-1"))
    assert state.unschedulable and state.ready == "True"
    asyncio.run(kube.uncordon(kubectl, "w-1"))
    assert not asyncio.run(kube.node_state(kubectl, "w-1")).unschedulable
    with pytest.raises(kube.NodeNotFound, match="no node 'ghost'"):
        asyncio.run(kube.cordon(kubectl, "ghost"))


def test_drain_evicts_pods_respecting_the_budget_and_keeps_daemonsets(kubectl):
    kubectl.plant(pods=[web("web-a1", "w-1"), web("web-b2", "w-1"), web("web-c3", "w-2"),
                        {"name": "proxy-1", "namespace": "kube-system", "node": "w-1", "owner": "DaemonSet"},
                        web("scratch-1", "w-1", labels={"app": "scratch"}, emptydir=True)],
                  pdbs=[{"name": "web", "selector": {"app": "web"}, "minAvailable": 2}])
    asyncio.run(kube.drain(kubectl, "w-1", 30))
    pods = kubectl.state_of()["pods"]
    on_w1 = sorted(p["name"] for p in pods.values() if p["node"] == "w-1")
    assert on_w1 == ["proxy-1"]  # only the DaemonSet pod stays
    assert sum(1 for p in pods.values() if p["labels"].get("app") == "web" and p["phase"] == "Running") == 3
    moved = [p for p in pods.values() if p["labels"].get("app") in ("web", "scratch")]
    assert len(moved) == 4 and all(p["node"] in ("w-2", "m-1") for p in moved)  # rescheduled off w-1
    drain_call = next(a for a in kubectl.calls() if a[0] == "drain")
    assert {"--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s"} <= set(drain_call)
    assert "--force" not in drain_call


def test_drain_blocked_by_a_budget_fails_in_time_naming_the_pods(kubectl):
    # nowhere to reschedule: w-2 cordoned, m-1 planted unschedulable -> the budget cannot be met
    kubectl.plant(nodes={"m-1": {"unschedulable": True}, "w-2": {"unschedulable": True}},
                  pods=[web("web-a1", "w-1"), web("web-b2", "w-1")],
                  pdbs=[{"name": "web", "selector": {"app": "web"}, "minAvailable": 2}])
    t0 = time.monotonic()
    with pytest.raises(kube.NodeOpError) as info:
        asyncio.run(kube.drain(kubectl, "w-1", 2))
    assert time.monotonic() - t0 < 15
    err = info.value
    assert err.step == "drain" and err.node == "w-1"
    assert set(err.blocking) == {"default/web-a1", "default/web-b2"}
    assert "PodDisruptionBudget" in str(err) and "default/web-a1" in str(err) and "within 2s" in str(err)
    assert kubectl.state_of()["nodes"]["w-1"]["unschedulable"] is True


def test_drain_names_pods_without_a_controller(kubectl):
    kubectl.plant(pods=[{"name": "bare", "node": "w-1", "owner": None}])
    with pytest.raises(kube.NodeOpError, match=r"default/bare: Pods declare no controller \(use --force"):
        asyncio.run(kube.drain(kubectl, "w-1", 5))
    asyncio.run(kube.drain(kubectl, "w-1", 5, force=True))
    assert "default/bare" not in kubectl.state_of()["pods"]


def test_delete_node_is_idempotent(kubectl):
    assert asyncio.run(kube.delete_node(kubectl, "w-2")) is True
    assert asyncio.run(kube.delete_node(kubectl, "w-2")) is False
    assert "w-2" not in kubectl.state_of()["nodes"]
    assert asyncio.run(kube.node_state(kubectl, "w-2")) is None


def test_wait_node_ready_polls_until_ready(kubectl):
    kubectl.plant(nodes={"w-1": {"ready": False}})

    async def later():
        await asyncio.sleep(1.0)
        await asyncio.to_thread(kubectl.plant, nodes={"w-1": {"ready": True}})

    async def both():
        return (await asyncio.gather(kube.wait_node_ready(kubectl, "w-1", 20, interval=0.2), later()))[0]

    t0 = time.monotonic()
    state = asyncio.run(both())
    assert state.ready == "True" and 0.9 < time.monotonic() - t0 < 10


def test_wait_node_ready_times_out_naming_the_node(kubectl):
    with pytest.raises(kube.NodeOpError, match="node w-9 not Ready after 0.5s .not registered."):
        asyncio.run(kube.wait_node_ready(kubectl, "w-9", 0.5, interval=0.1))


@pytest.mark.parametrize("name", ["", "W-1", "a b", "x;reboot", "-rf", "a" * 254])
def test_node_names_are_checked_before_reaching_kubectl(name):
    async def never(*a, **k):
        raise AssertionError("kubectl must not run")
    with pytest.raises(ValueError):
        asyncio.run(kube.cordon(never, name))
