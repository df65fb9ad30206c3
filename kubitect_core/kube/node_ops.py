"""Kubernetes node lifecycle through kubectl on a control plane: cordon, uncordon, drain, delete, wait Ready.

Every Day-2 operation (scale-in, control-plane removal, upgrade, replace) takes a node out of
service and brings one back the same way, so the steps live here once, shared by every
installer through `kubitect_core.sdk.kube`. Each primitive takes a `Kubectl` runner: any async
callable `(args, *, stdin, timeout) -> Result` that runs kubectl with cluster-admin rights
somewhere (`RemoteKubectl` runs it with sudo on a control plane over the cluster's SSH access;
the Rook addon's `SshKubectl` fits too; tests pass one that runs the lab's kubectl double).

Why kubectl and not an API client: the nodes already carry a kubectl that speaks the cluster's
own version, and `kubectl drain` implements the eviction loop (PodDisruptionBudgets, DaemonSets,
mirror pods, retries) exactly as the Kubernetes project maintains it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kubitect_core.remote import Remote, Result
from kubitect_core.stage import StageError

# A Node name is a DNS subdomain (RFC 1123): what kubelet registers and kubectl accepts.
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# How kubectl reports a missing node: `Error from server (NotFound): nodes "w-1" not found`.
_NOT_FOUND = re.compile(r'\bnodes? "([^"]+)" not found')
# `error when evicting pods/"web-1" -n "default"` (a PodDisruptionBudget refused, or the timeout hit).
_EVICTING = re.compile(r'error when evicting pods/"([^"]+)" -n "([^"]+)"')
# `cannot delete <kind> (use --flag ...): ns/a, ns/b`: pods drain refuses without a flag we do not pass.
_CANNOT_DELETE = re.compile(r"cannot delete ([^:(]+?)\s*\((use [^)]*)\):\s*([^\n\]]+)")


class Kubectl(Protocol):
    """Runs kubectl (cluster-admin) with `args` and returns its result; never raises for an exit code."""

    async def __call__(self, args: list[str], *, stdin: str | None = None,
                       timeout: float | None = None) -> Result: ...


@dataclass
class RemoteKubectl:
    """kubectl with sudo on a control plane we already hold a connection to.

    `prefix` is how the installer calls it there: `kubectl --kubeconfig /etc/kubernetes/admin.conf`
    (kubeadm) or `/usr/local/bin/k3s kubectl` (k3s). Arguments are quoted one by one.
    """

    remote: Remote
    prefix: str

    async def __call__(self, args: list[str], *, stdin: str | None = None, timeout: float | None = None) -> Result:
        return await self.remote.run(f"{self.prefix} {shlex.join(args)}", sudo=True, check=False, input=stdin,
                                     timeout=timeout)


class NodeOpError(StageError):
    """A node operation failed; names the node, the step and (for drain) the pods that block it."""

    def __init__(self, node: str, step: str, message: str, blocking: dict[str, str] | None = None):
        super().__init__(message)
        self.node, self.step, self.blocking = node, step, dict(blocking or {})


class NodeNotFound(NodeOpError):
    """The cluster has no Node of that name (already deleted, or never joined)."""


def check_node_name(node: str) -> str:
    """The node name, fully matched as a DNS subdomain (what reaches kubectl's command line)."""
    if not isinstance(node, str) or len(node) > 253 or not _NODE_NAME.fullmatch(node):
        raise ValueError(f"'{node}' is not a Kubernetes node name (lower-case letters, digits, '-' and '.')")
    return node


def _said(res: Result) -> str:
    text = (res.stderr.strip() or res.stdout.strip()).splitlines()
    return text[-1] if text else f"exit {res.exit_status}"


def is_not_found(res: Result, node: str | None = None) -> bool:
    """Whether kubectl failed because the node (`node`, or any) does not exist (exit 1, NotFound).

    Only a missing *node* counts: a pod that vanished during a drain is not a missing node."""
    if res.ok:
        return False
    return any(node is None or name == node for name in _NOT_FOUND.findall(f"{res.stderr}\n{res.stdout}"))


async def _node_call(kubectl: Kubectl, node: str, step: str, args: list[str], timeout: float = 60) -> Result:
    res = await kubectl(args, timeout=timeout)
    if res.ok:
        return res
    if is_not_found(res, node):
        raise NodeNotFound(node, step, f"{step} {node}: the cluster has no node '{node}'")
    raise NodeOpError(node, step, f"{step} {node} failed: {_said(res)}")


async def cordon(kubectl: Kubectl, node: str) -> None:
    """Marks the node unschedulable (`kubectl get nodes` then shows SchedulingDisabled); idempotent.

    Raises NodeNotFound when the cluster has no such node.
    """
    await _node_call(kubectl, check_node_name(node), "cordon", ["cordon", node])


async def uncordon(kubectl: Kubectl, node: str) -> None:
    """Lets the scheduler use the node again; idempotent. Raises NodeNotFound for an unknown node."""
    await _node_call(kubectl, check_node_name(node), "uncordon", ["uncordon", node])


def blocking_pods(output: str) -> dict[str, str]:
    """`namespace/pod` -> why it blocks, read from a failed `kubectl drain`'s output.

    Two kinds: evictions refused until the timeout (a PodDisruptionBudget allows no disruption
    now) and pods drain will not delete without a flag (no controller, local storage, DaemonSet).
    """
    found: dict[str, str] = {}
    for name, namespace in _EVICTING.findall(output):
        why = "its PodDisruptionBudget allows no eviction now" if "disruption budget" in output \
            else "it was not evicted in time"
        found.setdefault(f"{namespace}/{name}", why)
    for kind, flag, pods in _CANNOT_DELETE.findall(output):
        for pod in (p.strip().rstrip(",") for p in pods.split(",")):
            if pod and "/" in pod:
                found.setdefault(pod, f"{kind.strip()} ({flag.strip()})")
    return found


async def drain(kubectl: Kubectl, node: str, timeout_s: float, *, force: bool = False) -> None:
    """Evicts the node's pods as `kubectl drain` does, within `timeout_s`.

    Evictions go through the Eviction API, so PodDisruptionBudgets are respected; DaemonSet pods
    stay (their controller would re-create them at once); emptyDir data is deleted (it is the
    pod's scratch space, gone with the pod anyway). Pods without a controller are evicted only
    with `force` (they would not come back anywhere). The node is cordoned first by kubectl.

    On failure raises NodeOpError naming the pods that block, and why, so the user can act
    (scale the workload, relax the budget) and re-run; the node stays cordoned.
    """
    check_node_name(node)
    seconds = max(1, int(timeout_s))
    args = ["drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={seconds}s"]
    if force:
        args.append("--force")
    res = await kubectl(args, timeout=seconds + 60)
    if res.ok:
        return
    text = f"{res.stdout}\n{res.stderr}"
    if is_not_found(res, node):
        raise NodeNotFound(node, "drain", f"drain {node}: the cluster has no node '{node}'")
    pods = blocking_pods(text)
    if pods:
        listed = "; ".join(f"{p}: {why}" for p, why in sorted(pods.items()))
        raise NodeOpError(node, "drain",
                          f"drain {node} did not finish within {seconds}s; the pods that block it: {listed}. "
                          "Free them (scale the workload up elsewhere, relax or delete the budget) and re-run; "
                          f"{node} stays cordoned meanwhile", pods)
    raise NodeOpError(node, "drain", f"drain {node} failed: {_said(res)}")


async def delete_node(kubectl: Kubectl, node: str) -> bool:
    """`kubectl delete node`; True when it deleted the node, False when it was already gone.

    Idempotent on purpose: a removal interrupted after this step is re-run from the start.
    """
    try:
        await _node_call(kubectl, check_node_name(node), "delete node", ["delete", "node", node])
    except NodeNotFound:
        return False
    return True


@dataclass(frozen=True)
class NodeState:
    """What the API server says about one node: Ready condition, cordoned or not, kubelet version."""

    name: str
    ready: str  # "True", "False" or "Unknown"
    unschedulable: bool
    version: str


def parse_node(item: dict) -> NodeState:
    """One Node object of `kubectl get node NAME -o json`."""
    status = item.get("status") or {}
    ready = next((c.get("status", "Unknown") for c in status.get("conditions") or [] if c.get("type") == "Ready"),
                 "Unknown")
    return NodeState((item.get("metadata") or {}).get("name", ""), str(ready),
                     bool((item.get("spec") or {}).get("unschedulable")),
                     (status.get("nodeInfo") or {}).get("kubeletVersion", ""))


async def node_state(kubectl: Kubectl, node: str) -> NodeState | None:
    """The node as the API server sees it, or None when it has no such node."""
    res = await kubectl(["get", "node", check_node_name(node), "-o", "json"], timeout=60)
    if is_not_found(res, node):
        return None
    if not res.ok:
        raise NodeOpError(node, "get node", f"get node {node} failed: {_said(res)}")
    try:
        return parse_node(json.loads(res.stdout))
    except (ValueError, AttributeError):
        raise NodeOpError(node, "get node", f"get node {node}: kubectl printed no Node object") from None


async def wait_node_ready(kubectl: Kubectl, node: str, timeout_s: float, *, interval: float = 0.25,
                          progress: Callable[[str, str], None] | None = None) -> NodeState:
    """Polls the node until its Ready condition is True; raises NodeOpError with its last state.

    Polls (the interval grows from `interval` to 5 s) rather than sleeping a fixed time: a node
    that is Ready at once costs one kubectl call.
    """
    check_node_name(node)
    deadline = time.monotonic() + timeout_s
    pause, last = interval, None
    while True:
        try:
            last = await node_state(kubectl, node)
        except NodeOpError:
            last = None
        if last is not None and last.ready == "True":
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            seen = "not registered" if last is None else f"Ready={last.ready}"
            raise NodeOpError(node, "wait Ready", f"node {node} not Ready after {timeout_s:g}s ({seen})")
        if progress:
            progress(node, "waiting until the node is Ready")
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 1.5, 5.0)
