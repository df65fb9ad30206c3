"""The storage layer of the libvirt provider: pools, the base image and the node disks, per host.

Record (the storage stage's slice for this provider): `hosts[h] = {uri, ssh}`, `pools[h] = {pool:
dir}`, `volumes[h] = {volume: path}`, `base_uploaded[h]` (False on a driver without upload, e.g.
the test driver). The libvirt objects themselves are made in `storage_layer`.
"""

from __future__ import annotations

import asyncio

from kubitect_core.sdk import Change, StageContext

from . import images, storage_layer
from .adopted import adopted_base_volumes
from .connection import HostConnection
from .hosts import ConvergingLayer, nodes_on, threadsafe
from .spec import HostSpec, image_spec


class StorageLayer(ConvergingLayer):
    """The `storage` layer (`kubitect_core.sdk.MachineLayer`) on the hosts that select libvirt:
    pools, the base image (downloaded once if a URL; a plan downloads nothing, an uncached URL shows
    as new) and every node's disks."""

    async def _base_image(self, ctx: StageContext, dry_run: bool) -> storage_layer.BaseImage | None:
        """The base image: resolved (downloaded or served from the cache, verified) for apply; for
        a plan only what is already local, never fetched. The progress line and the stage record
        name what really serves the image (e.g. a local import standing in for a distro URL)."""
        spec = image_spec(ctx.config)
        source = spec.source
        say = threadsafe(ctx, "image")
        if dry_run:
            local = images.cached(source, ctx.home)
            if local is None:
                return storage_layer.BaseImage(format="qcow2", virtual_size=0, local=None)
            return storage_layer.BaseImage(local.format, local.virtual_size, local)
        allow = bool(ctx.options.get("allow_unverified_image"))
        loop = asyncio.get_running_loop()
        local = await loop.run_in_executor(
            None, lambda: images.resolve(source, ctx.home, say, allow_unverified=allow))
        ctx.progress("image", f"{spec.distro} base image: {local.description}")
        ctx.record["image"] = {"distro": spec.distro, "source": source, "served_by": local.description,
                               "sha256": local.sha256}
        return storage_layer.BaseImage(local.format, local.virtual_size, local)

    async def _converge(self, ctx: StageContext, hosts: list[str], dry_run: bool) -> list[Change]:
        specs = self.hosts.specs(ctx, hosts)
        needs_image = any(nodes_on(ctx, h) for h in specs)
        base = await self._base_image(ctx, dry_run) if needs_image else None

        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            nodes = nodes_on(ctx, spec.name)
            say = threadsafe(ctx, spec.name)
            base_name = adopted_base_volumes(ctx).get(spec.name)
            changes, rec = await hc.call(lambda c: storage_layer.converge(
                c, cluster=ctx.cluster, host=spec, nodes=nodes, base=base, dry_run=dry_run, say=say,
                base_name=base_name))
            if not dry_run:
                ctx.record.setdefault("pools", {})[spec.name] = rec["pools"]
                ctx.record.setdefault("volumes", {})[spec.name] = rec["volumes"]
                if rec["base_uploaded"] is not None:
                    ctx.record.setdefault("base_uploaded", {})[spec.name] = rec["base_uploaded"]
            return changes

        return await self.hosts.each(ctx, hosts, one, record=not dry_run)

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Removes the cluster's pools and volumes on each host, found by tag even without a record."""
        async def one(spec: HostSpec, hc: HostConnection) -> list[Change]:
            h = spec.name
            recorded = list(ctx.record.get("pools", {}).get(h, {}))
            extra = tuple(v for v in [adopted_base_volumes(ctx).get(h)] if v)
            out = await hc.call(lambda c: storage_layer.destroy(c, cluster=ctx.cluster, host=h,
                                                                recorded_pools=recorded, adopted_volumes=extra))
            for key in ("pools", "volumes", "base_uploaded"):
                ctx.record.get(key, {}).pop(h, None)
            ctx.record.get("hosts", {}).pop(h, None)
            return out

        return await self.hosts.each(ctx, hosts, one, record=False)
