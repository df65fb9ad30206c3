"""Rolling Kubernetes upgrades, whatever installer drives the nodes (kubeadm, k3s, a third party's).

KubeOne's safety checks with Kubespray's mechanics (reference: day2-and-fast-failover.md §2):

1. **Preflight, before anything changes** (`preflight`): every configured node is registered and
   Ready and no stranger is; the target is no downgrade and at most one minor above the running
   API server (a longer jump is refused with the path to take, or walked one minor at a time
   when the user asks: option `upgrade_walk`); no kubelet newer than the API server or more than
   three minors older than the target (the kubelet skew policy since 1.28).
2. **An upgrade lock on the cluster** (`_take_lock`): a directory made atomically on the first
   control plane. The local cluster lock already keeps two runs of one home apart; this one also
   keeps apart two homes (two admins, two machines) driving the same cluster.
3. **An etcd snapshot**, copied into the cluster directory (0600), or a reason why none was taken,
   reported as a change, never silent.
4. **Control planes one at a time, then workers in batches** (option `upgrade_max_unavailable`,
   default 1): cordon and drain, the installer's own steps (`UpgradeDriver.upgrade_node`),
   uncordon, then wait, polling, until the node is Ready at the new version and the API answers
   /readyz through the control-plane endpoint. No fixed sleeps.
5. **Resumable**: the record keeps the hop being made and every node finished (checkpointed after
   each). A re-run continues at the node where the last one stopped and redoes no finished node.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kubitect_core.contracts import Change, StageContext
from kubitect_core.kube.cluster import API_PORT, cluster_nodes
from kubitect_core.kube.node_ops import (
    Kubectl,
    NodeOpError,
    NodeState,
    RemoteKubectl,
    cordon,
    drain,
    node_state,
    parse_node,
    uncordon,
)
from kubitect_core.kube.sources import ready_timeout
from kubitect_core.kube.versions import version_tuple
from kubitect_core.remote import NodePool, Remote, RemoteError
from kubitect_core.stage import StageError
from kubitect_core.state import write_private
from kubitect_core.topology import Node

KUBELET_SKEW = 3  # minors a kubelet may trail the API server (version skew policy since 1.28)
LOCK_DIR = "/var/lib/kubitect/upgrade.lock"
RECORD_KEY = "upgrade"
DRAIN_TIMEOUT_S = 300


class UpgradeDriver(Protocol):
    """What an installer supplies: its own per-node steps, its snapshot, its kubectl."""

    kubectl: str  # how kubectl is run on a control plane (with the admin kubeconfig)

    async def upgrade_node(self, ctx: StageContext, node: Node, r: Remote, version: str, first: bool) -> list[str]:
        """The installer's steps between drain and uncordon; returns what it did (for the log).

        `first` is the first control plane of this hop (kubeadm: `upgrade apply` there,
        `upgrade node` elsewhere). Must end with the node's kubelet running `version`.
        """

    async def snapshot(self, ctx: StageContext, r: Remote, name: str) -> tuple[str | None, str]:
        """Takes an etcd snapshot on the first control plane: (path on the node, "") or (None, why not)."""

    async def hop_version(self, ctx: StageContext, minor: tuple[int, int]) -> str:
        """The release to install for an intermediate minor of a walked upgrade (e.g. the latest patch)."""


# ------------------------------------------------------------------------------ preflight (pure)


@dataclass(frozen=True)
class Observed:
    """The cluster as the API shows it: the API server's version and every registered node."""

    api_version: str
    nodes: dict[str, NodeState] = field(default_factory=dict)


def _minor(version: str) -> tuple[int, int]:
    major, minor, _ = version_tuple(_core(version))
    return major, minor


def _core(version: str) -> str:
    """`v1.34.2+k3s1` -> `v1.34.2`: the Kubernetes part of a distribution's version."""
    return str(version).split("+", 1)[0].split("-", 1)[0]


def path_of(running: str, target: str) -> list[str]:
    """Minors from the running one to the target: `['1.32', '1.33', '1.34']`."""
    (major, lo), (_, hi) = _minor(running), _minor(target)
    return [f"{major}.{m}" for m in range(lo, hi + 1)]


def preflight(expected: list[str], seen: Observed, target: str, *, walk: bool,
              resuming: list[str] | tuple[str, ...] = (), upgraded: list[str] | tuple[str, ...] = ()
              ) -> list[tuple[int, int]]:
    """Refuses an unsafe upgrade, naming what is wrong; returns the minors to step through.

    `expected` are the configured node names; `resuming` the nodes an interrupted run stopped at
    (they may be cordoned or NotReady: that is where this run continues); `upgraded` the nodes
    it already finished (their kubelets may be newer than an API server not yet upgraded).
    """
    problems = []
    missing = [n for n in expected if n not in seen.nodes]
    strangers = sorted(set(seen.nodes) - set(expected))
    if missing:
        problems.append(f"node(s) in the config but not in the cluster: {', '.join(missing)}")
    if strangers:
        problems.append(f"node(s) in the cluster but not in the config: {', '.join(strangers)}")
    not_ready = [n for n in expected if n in seen.nodes and seen.nodes[n].ready != "True" and n not in resuming]
    if not_ready:
        problems.append("node(s) not Ready: " + ", ".join(f"{n} ({seen.nodes[n].ready})" for n in not_ready))
    api, want = version_tuple(_core(seen.api_version)), version_tuple(_core(target))
    if want < api:
        problems.append(f"{target} is older than the running API server ({seen.api_version}): downgrades are "
                        "not supported; restore from a backup instead")
    hops: list[tuple[int, int]] = []
    if want[:2] > api[:2]:
        hops = [(api[0], m) for m in range(api[1] + 1, want[1] + 1)]
    if len(hops) > 1 and not walk:
        problems.append(f"{seen.api_version} -> {target} skips a minor version; Kubernetes upgrades go one minor "
                        f"at a time: {' → '.join(path_of(seen.api_version, target))}. Set kubernetes.version to "
                        f"v{api[0]}.{api[1] + 1}.x first, or pass --walk-minors to go through each minor in turn")
    newer = [f"{n} ({s.version})" for n, s in seen.nodes.items() if n in expected and n not in upgraded and s.version
             and version_tuple(_core(s.version)) > api]
    if newer:
        problems.append(f"kubelet(s) newer than the API server {seen.api_version}: {', '.join(newer)}")
    old = [f"{n} ({s.version})" for n, s in seen.nodes.items() if n in expected and s.version
           and want[1] - version_tuple(_core(s.version))[1] > KUBELET_SKEW]
    if old:
        problems.append(f"kubelet(s) more than {KUBELET_SKEW} minors older than {target} (the version skew policy): "
                        f"{', '.join(old)}; upgrade them first")
    if problems:
        raise StageError("upgrade preflight failed, nothing was changed:\n  - " + "\n  - ".join(problems))
    return hops or [tuple(want[:2])]  # type: ignore[list-item]


def batches(nodes: list[Node], size: int) -> list[list[Node]]:
    """Workers in groups of `size` (maxUnavailable): at most that many drained at once."""
    size = max(1, int(size))
    return [nodes[i:i + size] for i in range(0, len(nodes), size)]


def max_unavailable(ctx: StageContext) -> int:
    """Workers upgraded at once (option `upgrade_max_unavailable`, CLI `--max-unavailable`, default 1)."""
    value = ctx.options.get("upgrade_max_unavailable")
    value = 1 if value is None else value
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise StageError(f"--max-unavailable must be a whole number of nodes (actual: {value!r})") from None
    if n < 1:
        raise StageError(f"--max-unavailable must be at least 1 (actual: {n})")
    return n


def upgrade_pending(ctx: StageContext, want: str) -> bool:
    """True when an upgrade is under way (recorded) or a joined node was recorded at another version."""
    if ctx.record.get(RECORD_KEY):
        return True
    nodes = ctx.record.get("nodes", {})
    return any(r.get("state") == "joined" and r.get("version") not in (None, want) for r in nodes.values())


# ------------------------------------------------------------------------------ reading the cluster


def parse_nodes(node_list_json: str) -> dict[str, NodeState]:
    """Name -> Ready condition, cordon and kubelet version, from `kubectl get nodes -o json`."""
    try:
        items = json.loads(node_list_json).get("items", [])
    except (ValueError, AttributeError):
        return {}
    return {state.name: state for state in map(parse_node, items)}


async def observe(r: Remote, kubectl: str, timeout: float = 60) -> Observed:
    """The API server's version and the nodes, read on a control plane (retried while it restarts)."""
    deadline = time.monotonic() + timeout
    while True:
        ver = await r.run(f"{kubectl} get --raw /version", sudo=True, check=False, timeout=30)
        nodes = await r.run(f"{kubectl} get nodes -o json", sudo=True, check=False, timeout=60)
        if ver.ok and nodes.ok:
            try:
                api = json.loads(ver.stdout)["gitVersion"]
            except (ValueError, KeyError):
                raise StageError(f"{r.label}: the API server's /version is unreadable: {ver.stdout[:200]}") from None
            return Observed(api, parse_nodes(nodes.stdout))
        if time.monotonic() >= deadline:
            raise StageError(f"{r.label}: cannot read the cluster's version and nodes: "
                             f"{(ver.stderr or nodes.stderr).strip()[:300]}")
        await asyncio.sleep(0.25)


# ------------------------------------------------------------------------------ node operations


async def wait_node_at(kubectl: Kubectl, name: str, version: str, timeout: float,
                       progress: Callable[[str, str], None], interval: float = 0.25) -> None:
    """Polls until `name` is Ready and its kubelet reports `version` (it does so when restarted)."""
    deadline = time.monotonic() + timeout
    last: NodeState | None = None
    while True:
        try:
            last = await node_state(kubectl, name)
        except NodeOpError:
            last = None  # the API server may be restarting: keep polling
        if last and last.ready == "True" and _core(last.version) == _core(version):
            return
        if time.monotonic() >= deadline:
            state = f"Ready={last.ready}, kubelet {last.version}" if last else "not registered"
            raise StageError(f"{name} is not Ready at {version} after {timeout:g}s ({state})")
        progress(name, f"waiting until Ready at {version}")
        await asyncio.sleep(interval)


async def wait_api_through_endpoint(r: Remote, endpoint: str, timeout: float, port: int = API_PORT) -> None:
    """Polls GET /readyz through the control-plane endpoint (the VIP) from `r` until it answers 200."""
    script = (f"t=0; until curl -ksf --max-time 3 https://{endpoint}:{port}/readyz >/dev/null; do "
              f"t=$((t+1)); [ $t -ge {int(timeout * 5)} ] && exit 1; sleep 0.2; done")
    res = await r.run(script, check=False, timeout=timeout + 30)
    if not res.ok:
        raise StageError(f"the API is not healthy through {endpoint}:{port} after {timeout:g}s")


# ------------------------------------------------------------------------------ the lock


async def _take_lock(r: Remote, run_id: str, cluster: str) -> None:
    """mkdir is atomic: whoever makes the directory holds the lock; our own id resumes it."""
    owner_file = f"{LOCK_DIR}/owner"
    owner = f"{run_id} {cluster} {datetime.now(UTC).isoformat(timespec='seconds')}"
    res = await r.run(f"mkdir -p {LOCK_DIR.rsplit('/', 1)[0]} && mkdir {LOCK_DIR} 2>/dev/null && "
                      f"echo {shlex.quote(owner)} > {owner_file}", sudo=True, check=False)
    if res.ok:
        return
    held = (await r.run(f"cat {owner_file}", sudo=True, check=False)).stdout.strip()
    if held.split(" ", 1)[0] == run_id:
        return  # our own interrupted run: resume it
    raise StageError(f"another upgrade holds the upgrade lock on {r.label} ({LOCK_DIR}: {held or 'no owner'}); "
                     f"wait for it to finish. If it died and will not come back, remove {LOCK_DIR} on "
                     f"{r.label} and re-run")


async def _release_lock(r: Remote) -> None:
    await r.run(f"rm -rf {LOCK_DIR}", sudo=True, check=False)


# ------------------------------------------------------------------------------ the run


async def _save_snapshot(ctx: StageContext, driver: UpgradeDriver, first: Remote, running: str,
                         hop: str) -> Change:
    name = f"pre-upgrade-{_core(running)}-to-{_core(hop)}"
    path, why = await driver.snapshot(ctx, first, name)
    if path is None:
        return Change("keep", "etcd-snapshot", name, None, f"skipped: {why}")
    data = await first.get(path, sudo=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    local = ctx.cluster_dir / "backups" / f"etcd-{name}-{stamp}.db"
    local.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(local, data)
    await first.run(f"rm -f {shlex.quote(path)}", sudo=True, check=False)
    return Change("create", "etcd-snapshot", name, None, f"{local} ({len(data)} bytes, 0600)")


@dataclass
class _Roll:
    """One hop of a rolling upgrade: where it runs, and its record (checkpointed after every node)."""

    ctx: StageContext
    driver: UpgradeDriver
    first: Remote
    kubectl: Kubectl
    remote: Callable[[Node], Awaitable[Remote]]
    rec: dict[str, Any]
    changes: list[Change]

    async def node(self, node: Node, first_cp: bool) -> None:
        ctx, rec, hop = self.ctx, self.rec, self.rec["to"]
        if node.name in rec["done"]:
            return
        rec["current"] = sorted({*rec.get("current", []), node.name})
        ctx.checkpoint()
        r = await self.remote(node)
        timeout = ready_timeout(ctx)
        ctx.progress(node.name, f"draining before the upgrade to {hop}")
        await cordon(self.kubectl, node.name)
        await drain(self.kubectl, node.name, float(ctx.options.get("drain_timeout") or DRAIN_TIMEOUT_S))
        did = await self.driver.upgrade_node(ctx, node, r, hop, first_cp)
        # from the node itself: the path its kubelet takes to the API (a control plane: its own API is back)
        await wait_api_through_endpoint(r, ctx.topology.endpoint, timeout)
        await uncordon(self.kubectl, node.name)
        await wait_node_at(self.kubectl, node.name, hop, timeout, ctx.progress)
        rec["done"].append(node.name)
        rec["current"] = [n for n in rec["current"] if n != node.name]
        ctx.record.setdefault("nodes", {}).setdefault(node.name, {}).update(version=hop)
        ctx.checkpoint()
        self.changes.append(Change("change", "node", node.name, node.host, f"upgraded to {hop}: " + "; ".join(did)))

    async def run(self) -> None:
        ctx, rec = self.ctx, self.rec
        if rec["snapshot"] is None:
            snap = await _save_snapshot(ctx, self.driver, self.first, rec["from"], rec["to"])
            rec["snapshot"] = snap.detail
            ctx.checkpoint()
            self.changes.append(snap)
        masters = list(ctx.topology.masters)
        for node in masters:  # one at a time: etcd quorum and the API stay up
            await self.node(node, first_cp=node is masters[0])
        pending = [w for w in ctx.topology.workers if w.name not in rec["done"]]
        for group in batches(pending, max_unavailable(ctx)):
            await asyncio.gather(*(self.node(w, False) for w in group))


async def upgrade(ctx: StageContext, pool: NodePool, first: Remote, driver: UpgradeDriver, target: str,
                  remote: Callable[[Node], Awaitable[Remote]]) -> list[Change]:
    """Upgrades the running cluster to `target` (see the module docstring for the order).

    `pool` is the installer's SSH pool (`remote(node)` draws from it), `first` the first control
    plane, where kubectl runs, the lock lives and the snapshot is taken.
    """
    del pool  # the connections come through `remote`; kept in the signature for drivers that batch
    rec: dict[str, Any] = ctx.record.get(RECORD_KEY) or {}
    seen = await observe(first, driver.kubectl)
    hops = preflight([n.name for n in cluster_nodes(ctx)], seen, target,
                     walk=bool(ctx.options.get("upgrade_walk")), resuming=rec.get("current") or [],
                     upgraded=rec.get("done") or [])
    if rec.get("to") and _minor(rec["to"]) not in hops:  # an interrupted hop of a walk finishes first
        hops = sorted({*hops, _minor(rec["to"])})
    max_unavailable(ctx)  # a bad value fails here, before anything changed
    changes: list[Change] = []
    run_id = rec.get("id") or f"kubitect-{time.time_ns():x}"
    if not rec:  # the id is recorded before the lock is taken: a run that dies holding it can resume
        rec = {"id": run_id, "from": seen.api_version, "to": None, "done": [], "current": [], "snapshot": None}
        ctx.record[RECORD_KEY] = rec
        ctx.checkpoint()
    await _take_lock(first, run_id, ctx.cluster)
    ctx.progress(ctx.topology.masters[0].name, "upgrade lock taken")
    kubectl = RemoteKubectl(first, driver.kubectl)
    running = seen.api_version
    for minor in hops:
        if minor == hops[-1]:
            hop = target
        elif rec.get("to") and _minor(rec["to"]) == minor:
            hop = rec["to"]
        else:
            hop = await driver.hop_version(ctx, minor)
        if rec.get("to") != hop:
            rec = {"id": run_id, "from": running, "to": hop, "done": [], "current": [], "snapshot": None}
        ctx.record[RECORD_KEY] = rec
        ctx.checkpoint()
        await _Roll(ctx, driver, first, kubectl, remote, rec, changes).run()
        ctx.record.pop(RECORD_KEY, None)
        ctx.record.setdefault("upgrades", []).append(
            {"from": rec["from"], "to": hop, "at": datetime.now(UTC).isoformat(timespec="seconds")})
        running, rec = hop, {}
        ctx.checkpoint()
    await _release_lock(first)
    return changes


# ------------------------------------------------------------------------------ helpers for drivers


NO_ETCD = "neither etcdctl nor a running etcd container"  # kubitect_core.kube.etcd's words for "none here"


async def stacked_etcd_snapshot(r: Remote, path: str) -> tuple[str | None, str]:
    """An etcd snapshot of a kubeadm (stacked etcd) control plane at `path` on the node, or why not.

    A snapshot that fails is an error (the upgrade has not started yet). A control plane with no
    etcd at all (an external etcd, which its owner backs up) is skipped, with that reason reported
    as a change.
    """
    from kubitect_core.kube import etcd

    try:
        await etcd.snapshot_save(r, path)
    except (RemoteError, StageError) as exc:
        if NO_ETCD in str(exc):
            return None, f"{r.label} runs no etcd ({NO_ETCD}): back up the external etcd yourself"
        raise StageError(f"{r.label}: the etcd snapshot before the upgrade failed, nothing was changed: {exc}") \
            from None
    return path, ""


async def latest_release(url: str, minor: str, timeout: float = 10.0) -> str:
    """The newest patch release of `minor`, from a plain-text marker (dl.k8s.io) or a redirect (k3s channels).

    Bounded; an answer that is not a release of `minor` is an error naming the URL.
    """
    import urllib.request

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URLs
            body = resp.read(200).decode(errors="replace").strip()
            return body if body.startswith("v") else resp.geturl().rstrip("/").rsplit("/", 1)[-1]

    try:
        found = await asyncio.wait_for(asyncio.to_thread(fetch), timeout + 2)
    except (OSError, TimeoutError) as exc:
        raise StageError(f"cannot find the newest {minor} release to walk through ({url}: {exc})") from None
    found = found.replace("%2B", "+")
    if not found.startswith(minor + "."):
        raise StageError(f"{url} names '{found[:60]}', not a {minor} release")
    return found
