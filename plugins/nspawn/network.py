"""network layer: the cluster bridge, in the network namespace kubitect runs in.

The bridge carries the gateway address, so kubitect (and the user's ssh) reach the nodes
directly; nodes attach to it with nspawn's `--network-bridge`. No NAT, no firewall rules.

The bridge is `cluster.network.bridge` when the config names one, else `kb-<hash8>`. A bridge
kubitect creates is tagged with the link alias `kubitect:<cluster id>`: only a tagged bridge is
changed or deleted, so a bridge that existed before (named in the config) is used as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubitect_core.sdk import Change, StageContext

from .host import NspawnError, cluster_id, root_netns_refusal, sh
from .settings import cluster_bridge, cluster_net


@dataclass(frozen=True)
class BridgeInfo:
    addresses: list[str]  # "a.b.c.d/nn"
    alias: str


def owner_tag(ctx: StageContext) -> str:
    return f"kubitect:{cluster_id(ctx.cluster_dir)}"


async def bridge_info(name: str) -> BridgeInfo | None:
    """The bridge's IPv4 addresses and alias, or None when no such link exists."""
    rc, out, _ = await sh("ip", "-j", "addr", "show", "dev", name, check=False)
    if rc != 0 or not json.loads(out or "[]"):
        return None
    addrs = [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0].get("addr_info", [])
             if a.get("family") == "inet"]
    _, link, _ = await sh("ip", "-j", "link", "show", "dev", name, check=False)
    alias = (json.loads(link or "[{}]") or [{}])[0].get("ifalias", "")
    return BridgeInfo(addrs, alias)


def _guard() -> None:
    refusal = root_netns_refusal()
    if refusal:
        raise NspawnError(refusal)


async def plan(ctx: StageContext) -> list[Change]:
    """What apply would do to the bridge; touches nothing."""
    name, want = cluster_bridge(ctx), cluster_net(ctx).gateway_cidr
    info = await bridge_info(name)
    if info is None:
        return [Change("create", "bridge", name, detail=want)]
    if info.alias != owner_tag(ctx):
        return [Change("keep", "bridge", name, detail="existing bridge, used as is")]
    if want not in info.addresses:
        return [Change("change", "bridge", name, detail=f"add address {want}")]
    return [Change("keep", "bridge", name, detail=want)]


async def apply(ctx: StageContext) -> list[Change]:
    """Creates the bridge with the gateway address (or leaves a correct one alone) and records it."""
    _guard()
    net = cluster_net(ctx)
    name, want = cluster_bridge(ctx), net.gateway_cidr
    info = await bridge_info(name)
    if info is not None and info.alias != owner_tag(ctx):
        ctx.record["bridge"] = {"name": name, "created": False, "cidr": str(net.network)}
        return [Change("keep", "bridge", name, detail="existing bridge, used as is")]
    changes: list[Change] = []
    if info is None:
        ctx.progress(name, f"creating bridge with {want}")
        await sh("ip", "link", "add", name, "type", "bridge")
        await sh("ip", "link", "set", name, "alias", owner_tag(ctx))
        ctx.record["bridge"] = {"name": name, "address": want, "cidr": str(net.network), "created": True}
        info = BridgeInfo([], owner_tag(ctx))
        changes.append(Change("create", "bridge", name, detail=want))
    if want not in info.addresses:
        for stale in info.addresses:  # the gateway moved: the old address would answer for nothing
            await sh("ip", "addr", "del", stale, "dev", name, check=False)
        await sh("ip", "addr", "add", want, "dev", name)
        if not changes:
            changes.append(Change("change", "bridge", name, detail=f"address {want}"))
    await sh("ip", "link", "set", name, "up")
    ctx.record["bridge"] = {"name": name, "address": want, "cidr": str(net.network), "created": True}
    return changes or [Change("keep", "bridge", name, detail=want)]


async def destroy(ctx: StageContext) -> list[Change]:
    """Deletes the bridge kubitect made (found by name and owner tag even without a record)."""
    rec = ctx.record.pop("bridge", None) or {}
    name = rec.get("name") or cluster_bridge(ctx)
    info = await bridge_info(name)
    if info is None or info.alias != owner_tag(ctx):
        return []
    _guard()
    await sh("ip", "link", "del", name)
    return [Change("delete", "bridge", name)]
