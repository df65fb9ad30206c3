"""rook: Ceph on the configured data disks, installed after Kubernetes (addons.rook).

What must be true after apply: the pinned Rook operator runs, a CephCluster has one OSD per
configured data disk of the OSD nodes (by its /dev/disk/by-id path, never useAllDevices), a
replicated block pool backs the default StorageClass `ceph-block`, and Ceph reports HEALTH_OK.
The stage is registered through the `kubitect` entry point like any third party's, runs after
`kubernetes` and records the release, the counts, the devices and a digest per manifest.

Scaling out re-renders the CephCluster with the new nodes' disks, and apply waits until Ceph
counts every declared disk as an up/in OSD (HEALTH_OK alone does not say the new OSD exists). A
worker with OSDs that an apply removes is drained first by the `kubitect_nodes_leaving` hook
(`drain`). Changing the data disks of an OSD node rewrites the device list; Rook does not remove an
OSD by itself when its disk leaves the list.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from kubitect_core.sdk import Change, RemoteError, Stage, StageContext, StageError, StageSkipped, held_layer

from . import health
from .kubectl import CEPH_TOOLS, Kubectl, connect
from .layout import CLUSTER_NAME, NAMESPACE, Layout, layout
from .manifests import Fetch, ManifestError, download, sha256, upstream
from .release import RELEASES, Release, UnknownRelease, release_for
from .render import cluster_manifests

TOOLS = CEPH_TOOLS
APPLY = ["apply", "--server-side", "--force-conflicts", "--field-manager=kubitect", "-f", "-"]
CRDS = ["crd/cephclusters.ceph.rook.io", "crd/cephblockpools.ceph.rook.io"]


class RookStage(Stage):
    name = "rook"
    description = "Rook/Ceph on the configured data disks (addons.rook)"
    after = "kubernetes"
    requires = ("kubernetes",)

    def __init__(self, *, kubectl: Callable[[StageContext], Awaitable[Kubectl]] = connect,
                 fetch: Fetch = download, releases: dict[str, Release] | None = None,
                 poll_s: float = 10.0, timeout_s: float = 1800.0) -> None:
        self._kubectl, self._fetch = kubectl, fetch
        self._releases = releases if releases is not None else RELEASES
        self.poll_s, self.timeout_s = poll_s, timeout_s

    # ------------------------------------------------------------------ what is wanted
    def _settings(self, ctx: StageContext):
        rook = ctx.config.addons.rook
        return bool(rook.enabled), rook.version, dict(rook.node_selector or {})

    def _release(self, version: str | None) -> Release:
        try:
            return release_for(version, self._releases)
        except UnknownRelease as exc:
            raise StageError(str(exc)) from None

    def _layout(self, ctx: StageContext, selector: dict[str, str]) -> Layout:
        found = layout(ctx.topology, selector)
        if not found.osd_nodes:
            raise StageError("addons.rook is enabled but no node selected by addons.rook.nodeSelector has "
                             "dataDisks (validation should have refused this config)")
        return found

    def _wanted(self, ctx: StageContext, release: Release, lay: Layout) -> dict[str, str]:
        """{manifest: digest} in apply order: upstream files by their pinned sha256, ours rendered."""
        digests = {name: digest for name, digest in release.files}
        digests.update({name: sha256(text) for name, text in cluster_manifests(release, lay).items()})
        return digests

    def _diff(self, ctx: StageContext, wanted: dict[str, str], release: Release, lay: Layout) -> list[Change]:
        had = ctx.record.get("manifests") or {}
        detail = {"cephcluster.yaml": f"mon {lay.mon}, mgr {lay.mgr}, {lay.osd_count} OSD(s) on "
                                      + ", ".join(n.name for n in lay.osd_nodes),
                  "blockpool.yaml": f"pool replicas {lay.replicas}, default StorageClass ceph-block"}
        out = []
        for name, digest in wanted.items():
            action = "keep" if had.get(name) == digest else ("change" if name in had else "create")
            out.append(Change(action, "manifest", name, detail=detail.get(name, f"Rook {release.version}")))
        return out

    # ------------------------------------------------------------------ plan / apply / destroy
    async def plan(self, ctx: StageContext, registry) -> list[Change]:
        held = held_layer(ctx, self.name)  # Rook installed by Kubitect (Go) with Helm, adopted with the VMs
        if held is not None:
            return held
        enabled, version, selector = self._settings(ctx)
        if not enabled:
            return self._disabled(ctx)
        release, lay = self._release(version), self._layout(ctx, selector)
        return self._diff(ctx, self._wanted(ctx, release, lay), release, lay)

    def _disabled(self, ctx: StageContext) -> list[Change]:
        if ctx.record.get("manifests"):
            return [Change("keep", "addon", "rook", detail="addons.rook.enabled is false, but Rook holds data; "
                                                           "it stays installed (kubitect destroy removes it)")]
        return []

    async def apply(self, ctx: StageContext, registry) -> list[Change]:
        held = held_layer(ctx, self.name)
        if held is not None:
            return held
        enabled, version, selector = self._settings(ctx)
        if not enabled:
            return self._disabled(ctx)
        kube_facts = ctx.facts.get("kubernetes") or {}
        if not (kube_facts.get("installer") or kube_facts.get("kubeconfig")):
            raise StageSkipped("Kubernetes is not installed (the kubernetes stage recorded nothing), so Rook "
                               "cannot be installed yet")
        release, lay = self._release(version), self._layout(ctx, selector)
        changes = self._diff(ctx, self._wanted(ctx, release, lay), release, lay)
        try:
            texts = await asyncio.to_thread(upstream, release, ctx.home, self._fetch)
        except ManifestError as exc:
            raise StageError(str(exc)) from None
        texts.update(cluster_manifests(release, lay))
        kubectl = await self._kubectl(ctx)
        try:
            await self._install(ctx, kubectl, release, lay, texts)
            await self._wait_healthy(ctx, kubectl)
            await self._wait_osds(ctx, kubectl, lay)
        except RemoteError as exc:
            raise StageError(f"rook: {exc}") from None
        finally:
            await kubectl.close()
        return changes

    async def _run(self, kubectl: Kubectl, args: list[str], *, stdin: str | None = None,
                   timeout: float | None = None, what: str) -> str:
        res = await kubectl(args, stdin=stdin, timeout=timeout)
        if not res.ok:
            raise StageError(f"rook: {what} failed: {(res.stderr or res.stdout).strip()[-800:]}")
        return res.stdout

    async def _install(self, ctx: StageContext, kubectl: Kubectl, release: Release, lay: Layout,
                       texts: dict[str, str]) -> None:
        """Applies in the order Rook needs, recording each manifest's digest as soon as it is in."""
        record = ctx.record
        record.update(version=release.version, commit=release.commit, ceph_image=release.ceph_image,
                      operator_image=release.operator_image, namespace=NAMESPACE,
                      counts={"mon": lay.mon, "mgr": lay.mgr, "replicas": lay.replicas, "min_size": lay.min_size},
                      osd_devices={n.name: [path for _d, path, _g in n.devices] for n in lay.osd_nodes},
                      storage_class="ceph-block")
        # ours first, so an interrupted apply's destroy can still delete what it made
        record["rendered"] = {k: texts[k] for k in ("cephcluster.yaml", "blockpool.yaml")}
        manifests = record.setdefault("manifests", {})
        for name, digest in self._wanted(ctx, release, lay).items():
            ctx.progress("rook", f"applying {name}")
            await self._run(kubectl, APPLY, stdin=texts[name], timeout=300, what=f"kubectl apply {name}")
            manifests[name] = digest
            ctx.checkpoint()
            if name == "crds.yaml":
                await self._run(kubectl, ["wait", "--for=condition=Established", "--timeout=120s", *CRDS],
                                timeout=150, what="waiting for the Rook CRDs")
            if name == "operator.yaml":
                ctx.progress("rook", "waiting for the Rook operator to roll out")
                await self._run(kubectl, ["-n", NAMESPACE, "rollout", "status", "deploy/rook-ceph-operator",
                                          "--timeout=600s"], timeout=660, what="the Rook operator rollout")

    async def _wait_healthy(self, ctx: StageContext, kubectl: Kubectl) -> None:
        """Polls the CephCluster until Ceph says HEALTH_OK; progress and the timeout say what is missing."""
        deadline = time.monotonic() + self.timeout_s
        last = ""
        while True:
            res = await kubectl(["-n", NAMESPACE, "get", "cephcluster", CLUSTER_NAME, "-o", "json"], timeout=60)
            ok, why = health.cluster_state(res.stdout) if res.ok else (False, res.stderr.strip()[-300:])
            if ok:
                ctx.record["health"] = "HEALTH_OK"
                ctx.checkpoint()
                ctx.progress("rook", "Ceph reports HEALTH_OK")
                return
            if why != last:
                ctx.progress("rook", f"waiting for Ceph HEALTH_OK: {why}")
                last = why
            ctx.record["health"] = why
            if time.monotonic() >= deadline:
                raise StageError(f"rook: Ceph did not report HEALTH_OK within {self.timeout_s:.0f}s; still waiting "
                                 f"for: {why} (apply again to keep waiting; `kubectl -n {NAMESPACE} describe "
                                 f"cephcluster {CLUSTER_NAME}` on a master shows more)")
            await asyncio.sleep(self.poll_s)

    async def _wait_osds(self, ctx: StageContext, kubectl: Kubectl, lay: Layout) -> None:
        """Polls `ceph osd stat` until every declared disk is an up and in OSD (a disk added by
        scaling out is prepared by the operator after the cluster already reports HEALTH_OK)."""
        deadline, last = time.monotonic() + self.timeout_s, ""
        while True:
            out = await self._run(kubectl, TOOLS + ["osd", "stat", "-f", "json"], timeout=120, what="ceph osd stat")
            stat = json.loads(out or "{}")
            up, in_ = int(stat.get("num_up_osds", 0)), int(stat.get("num_in_osds", 0))
            if up >= lay.osd_count and in_ >= lay.osd_count:
                ctx.record["osds"] = up
                ctx.checkpoint()
                return
            why = f"{up} up / {in_} in of {lay.osd_count} declared OSD(s)"
            if why != last:
                ctx.progress("rook", f"waiting for the OSDs: {why}")
                last = why
            if time.monotonic() >= deadline:
                raise StageError(f"rook: not every declared data disk became an OSD within {self.timeout_s:.0f}s: "
                                 f"{why} (apply again to keep waiting; the OSD prepare pods' logs say why)")
            await asyncio.sleep(self.poll_s)

    async def destroy(self, ctx: StageContext, registry) -> list[Change]:
        """Removes the addon before the machines go: the CephCluster and pool while the operator
        still runs (it owns their finalizers), then the operator, common resources and CRDs.

        During `kubitect destroy` the VMs go next anyway, so an unreachable API is noted, not fatal.
        """
        recorded = ctx.record.get("manifests") or {}
        if not recorded:
            return []
        machines_go = bool(ctx.options.get("machines_deleted"))
        rendered = ctx.record.get("rendered") or {}
        try:
            release = self._release(ctx.record.get("version"))
            texts = await asyncio.to_thread(upstream, release, ctx.home, self._cached_only)
        except (StageError, ManifestError):
            texts = {}
        texts.update(rendered)
        order = ["blockpool.yaml", "cephcluster.yaml", "toolbox.yaml", "operator.yaml", "common.yaml", "crds.yaml"]
        changes = []
        try:
            kubectl = await self._kubectl(ctx)
        except (RemoteError, RuntimeError, OSError) as exc:
            if not machines_go:
                raise StageError(f"rook: cannot reach the cluster to remove Rook: {exc}") from None
            return [Change("delete", "addon", "rook", detail=f"API unreachable ({exc}); it goes with the VMs")]
        try:
            for name in [n for n in order if n in recorded]:
                if name not in texts:
                    changes.append(Change("delete", "manifest", name, detail="not cached; goes with the namespace"))
                    continue
                res = await kubectl(["delete", "--ignore-not-found", "--wait=true", "--timeout=120s", "-f", "-"],
                                    stdin=texts[name], timeout=180)
                if not res.ok and not machines_go:
                    raise StageError(f"rook: removing {name} failed: {(res.stderr or res.stdout).strip()[-600:]}")
                changes.append(Change("delete", "manifest", name,
                                      detail="" if res.ok else f"left to the VM deletion: {res.stderr.strip()[-200:]}"))
                recorded.pop(name, None)
                ctx.checkpoint()
        except RemoteError as exc:
            if not machines_go:
                raise StageError(f"rook: {exc}") from None
            changes.append(Change("delete", "addon", "rook", detail=f"API unreachable ({exc}); it goes with the VMs"))
        finally:
            await kubectl.close()
        ctx.record.clear()
        return changes

    @staticmethod
    def _cached_only(url: str) -> bytes:
        raise OSError("destroy does not download")

