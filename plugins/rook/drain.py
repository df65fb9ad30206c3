"""Moving Ceph's data off workers an apply removes (the `kubitect_nodes_leaving` hook).

A worker with OSDs that simply disappears takes its replicas with it: Ceph then runs degraded
until it has re-replicated, and if the remaining nodes cannot hold the data (too few hosts for the
pool's replica count, or too little space) it never recovers. So before the installer drains and
deletes a leaving node, this module:

1. checks, from Ceph's own numbers (`ceph osd tree`, `ceph osd df`, `ceph osd pool ls detail`),
   that the OSDs left behind can hold the data: at least as many nodes with OSDs as the largest
   pool's replica count (the failure domain is the host), and the raw data in use below
   `FILL_LIMIT` of the remaining capacity; otherwise it refuses, naming the numbers;
2. marks the leaving OSDs out and waits until every placement group is active+clean again and
   Ceph says the OSDs are safe to destroy (`ceph osd safe-to-destroy`);
3. removes the nodes from the CephCluster's node list (re-applying the recorded manifest without
   them), deletes their OSD deployments and purges the OSDs from Ceph.

A plan (`dry_run`) runs the read-only queries and the check, and lists the steps. Ceph is asked
through the toolbox deployment with the kubectl runner the addon uses for everything else.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubitect_core.sdk import Change, Node, RemoteError, StageContext, StageError, lazy_import

from .kubectl import CEPH_TOOLS, Kubectl, connect
from .layout import CLUSTER_NAME, NAMESPACE
from .manifests import sha256

yaml = lazy_import("yaml")  # PyYAML loads at a scale-in, not when the plugin is loaded (fast start)

TOOLS = CEPH_TOOLS
FILL_LIMIT = 0.85  # Ceph's default nearfull ratio: data beyond this on the remaining OSDs is refused
POLL_S = 10.0
TIMEOUT_S = 3600.0
KIB_PER_GIB = 1 << 20
APPLY = ["apply", "--server-side", "--force-conflicts", "--field-manager=kubitect", "-f", "-"]


@dataclass(frozen=True)
class Osd:
    id: int
    host: str
    kb: int
    kb_used: int
    in_: bool


@dataclass(frozen=True)
class CephView:
    """What the safety check needs: every OSD with its node, size and use; the pools' replica counts."""

    osds: tuple[Osd, ...]
    pools: dict[str, int]  # pool name -> replica size


def parse_view(tree_json: str, df_json: str, pools_json: str) -> CephView:
    """The OSDs (host from `osd tree`, size/use/in from `osd df`) and pool sizes, from Ceph's JSON."""
    host_of: dict[int, str] = {}
    for n in json.loads(tree_json or "{}").get("nodes", []):
        if n.get("type") == "host":
            for child in n.get("children") or []:
                host_of[int(child)] = str(n.get("name"))
    osds = []
    for n in json.loads(df_json or "{}").get("nodes", []):
        oid = int(n["id"])
        osds.append(Osd(oid, host_of.get(oid, "?"), int(n.get("kb") or 0), int(n.get("kb_used") or 0),
                        float(n.get("reweight", 1) or 0) > 0))
    pools = {str(p.get("pool_name")): int(p.get("size") or 1) for p in json.loads(pools_json or "[]")}
    return CephView(tuple(sorted(osds, key=lambda o: o.id)), pools)


def refusal(view: CephView, leaving: set[str]) -> str | None:
    """Why the OSDs left after `leaving` go cannot hold the data, with the numbers; None when they can."""
    gone = [o for o in view.osds if o.host in leaving]
    stay = [o for o in view.osds if o.host not in leaving and o.in_]
    if not gone:
        return None
    hosts = sorted({o.host for o in stay})
    names = ", ".join(sorted(leaving & {o.host for o in gone}))
    problems = []
    if view.pools:
        pool, size = max(view.pools.items(), key=lambda kv: kv[1])
        if len(hosts) < size:
            problems.append(f"{len(hosts)} node(s) with OSDs would remain ({len(stay)} OSD(s)), but pool '{pool}' "
                            f"keeps {size} replicas, each on a node of its own")
    # what must fit on the OSDs that stay: the data of every in OSD, and what leaving OSDs marked out by an
    # interrupted earlier run still hold (counted twice while it moves: on the safe side)
    used = sum(o.kb_used for o in view.osds if o.in_ or o.host in leaving)
    room = sum(o.kb for o in stay)
    if used > room * FILL_LIMIT:
        problems.append(f"the data in use ({used / KIB_PER_GIB:.1f} GiB raw, replicas included) would not fit on "
                        f"the remaining OSDs ({room / KIB_PER_GIB:.1f} GiB, of which Ceph fills at most "
                        f"{FILL_LIMIT:.0%}: {room * FILL_LIMIT / KIB_PER_GIB:.1f} GiB)")
    if not problems:
        return None
    return (f"rook: removing {names} would lose Ceph data: " + "; ".join(problems) + ". Add a node with a data "
            "disk first (or lower the replica count), then apply again; nothing was changed.")


def pgs_clean(stat_json: str) -> tuple[bool, str]:
    """(every PG active+clean, a summary) from `ceph pg stat -f json`."""
    doc = json.loads(stat_json or "{}")
    summary = doc.get("pg_summary", doc)
    states = {s.get("name"): int(s.get("num", 0)) for s in summary.get("num_pg_by_state", [])}
    total = int(summary.get("num_pgs", sum(states.values())))
    clean = states.get("active+clean", 0)
    other = ", ".join(f"{n} {s}" for s, n in sorted(states.items()) if s != "active+clean")
    return clean == total, f"{clean}/{total} PGs active+clean" + (f" ({other})" if other else "")


def without_nodes(cephcluster_yaml: str, leaving: set[str]) -> str:
    """The recorded CephCluster manifest without `leaving` in its node list and OSD placement."""
    doc = yaml.safe_load(cephcluster_yaml)
    storage = doc["spec"]["storage"]
    storage["nodes"] = [n for n in storage.get("nodes") or [] if n.get("name") not in leaving]
    for term in (doc["spec"].get("placement", {}).get("all", {}).get("nodeAffinity", {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])):
        for expr in term.get("matchExpressions", []):
            if expr.get("key") == "kubernetes.io/hostname":
                expr["values"] = [v for v in expr.get("values", []) if v not in leaving]
    return "# Written by kubitect: OSD nodes removed on scale-in.\n" + yaml.safe_dump(doc, sort_keys=False)


class Drain:
    """One drain of the leaving nodes' OSDs, through `kubectl` (toolbox for the ceph commands)."""

    def __init__(self, ctx: StageContext, kubectl: Kubectl, poll_s: float, timeout_s: float) -> None:
        self.ctx, self.kubectl, self.poll_s, self.timeout_s = ctx, kubectl, poll_s, timeout_s

    async def run(self, args: list[str], what: str, *, stdin: str | None = None) -> str:
        res = await self.kubectl(args, stdin=stdin, timeout=300)
        if not res.ok:
            raise StageError(f"rook: {what} failed: {(res.stderr or res.stdout).strip()[-600:]}")
        return res.stdout

    async def ceph(self, *args: str, json_out: bool = True) -> str:
        return await self.run(TOOLS + list(args) + (["-f", "json"] if json_out else []), "ceph " + " ".join(args))

    async def view(self) -> CephView:
        return parse_view(await self.ceph("osd", "tree"), await self.ceph("osd", "df"),
                          await self.ceph("osd", "pool", "ls", "detail"))

    async def wait(self, what: str, probe) -> None:
        """Polls `probe() -> (done, summary)` until done; the timeout error says what is missing."""
        deadline, last = time.monotonic() + self.timeout_s, ""
        while True:
            done, summary = await probe()
            if done:
                return
            if summary != last:
                self.ctx.progress("rook", f"waiting for {what}: {summary}")
                last = summary
            if time.monotonic() >= deadline:
                raise StageError(f"rook: {what} did not happen within {self.timeout_s:.0f}s ({summary}); the OSDs "
                                 "stay out, nothing was deleted: apply again to keep waiting")
            await asyncio.sleep(self.poll_s)

    async def rebalanced(self, ids: list[int]) -> tuple[bool, str]:
        clean, summary = pgs_clean(await self.ceph("pg", "stat"))
        if not clean:
            return False, summary
        res = await self.kubectl(TOOLS + ["osd", "safe-to-destroy", *map(str, ids)], timeout=120)
        return (True, summary) if res.ok else (False, f"{summary}; {(res.stderr or res.stdout).strip()[-200:]}")


async def nodes_leaving(ctx: StageContext, nodes: list[Node], dry_run: bool, *, kubectl_for=None,
                        poll_s: float | None = None, timeout_s: float | None = None) -> list[Change]:
    """The hook's work (see the module docstring); [] when Rook is not installed or no OSD is on `nodes`."""
    rook: dict[str, Any] = (ctx.facts or {}).get("rook") or {}
    devices: dict[str, list[str]] = rook.get("osd_devices") or {}
    leaving = {n.name for n in nodes} & set(devices)
    if not rook.get("manifests") or not leaving:
        return []
    poll_s = float(ctx.options.get("rook_poll_s", POLL_S) if poll_s is None else poll_s)
    timeout_s = float(ctx.options.get("rook_drain_timeout_s", TIMEOUT_S) if timeout_s is None else timeout_s)
    kubectl = await (kubectl_for or connect)(ctx)
    try:
        return await _drain(Drain(ctx, kubectl, poll_s, timeout_s), rook, leaving, dry_run)
    except RemoteError as exc:
        raise StageError(f"rook: {exc}") from None
    finally:
        await kubectl.close()


async def _drain(d: Drain, rook: dict[str, Any], leaving: set[str], dry_run: bool) -> list[Change]:
    ctx = d.ctx
    view = await d.view()
    why = refusal(view, leaving)
    if why:
        raise StageError(why)
    gone = [o for o in view.osds if o.host in leaving]
    ids = [o.id for o in gone]
    changes = [Change("change", "osd", f"osd.{o.id}", o.host, "marked out; its data moves to the remaining OSDs")
               for o in gone]
    changes += [Change("change", "manifest", "cephcluster.yaml", None,
                       "node(s) " + ", ".join(sorted(leaving)) + " removed from the OSD node list")]
    changes += [Change("delete", "osd", f"osd.{o.id}", o.host, "purged once Ceph is active+clean without it")
                for o in gone]
    if dry_run:
        return changes
    if ids:
        to_out = [str(o.id) for o in gone if o.in_]
        if to_out:
            ctx.progress("rook", "marking out " + ", ".join(f"osd.{i}" for i in to_out))
            await d.ceph("osd", "out", *to_out, json_out=False)
        await d.wait("Ceph to move the data off " + ", ".join(f"osd.{i}" for i in ids), lambda: d.rebalanced(ids))
    rendered = rook.setdefault("rendered", {})
    if rendered.get("cephcluster.yaml"):
        text = without_nodes(rendered["cephcluster.yaml"], leaving)
        await d.run(APPLY, f"re-applying CephCluster {CLUSTER_NAME} without the leaving nodes", stdin=text)
        rendered["cephcluster.yaml"] = text
        rook.setdefault("manifests", {})["cephcluster.yaml"] = sha256(text)
    for oid in ids:
        await d.run(["-n", NAMESPACE, "delete", "deployment", f"rook-ceph-osd-{oid}", "--ignore-not-found"],
                    f"deleting the deployment of osd.{oid}")
        await d.ceph("osd", "purge", str(oid), "--yes-i-really-mean-it", json_out=False)
        ctx.progress("rook", f"osd.{oid} removed")
    for name in leaving:
        rook.get("osd_devices", {}).pop(name, None)
    ctx.checkpoint()
    return changes


def run_blocking(coro) -> Any:
    """Runs `coro` to completion from synchronous code, also when an event loop already runs in this
    thread (the engine calls hooks from its loop): then on a thread of its own, with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="rook-drain")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
