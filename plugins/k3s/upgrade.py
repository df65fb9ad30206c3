"""k3s's half of a rolling upgrade: the release binary swapped, the unit restarted, the snapshot.

The order, the checks, the drain and the waits are the SDK's (`kubitect_core.sdk.kube.upgrade`).
k3s upgrades by replacing its one binary and restarting the node's unit; a server migrates its
own datastore and manifests on start. Servers go one at a time (embedded etcd quorum), agents in
batches. The snapshot is k3s's own `k3s etcd-snapshot save` on the first server.
"""

from __future__ import annotations

import shlex

from kubitect_core.sdk import Node, Remote, StageContext, StageError, kube

from . import args as k3s_args

CHANNEL_URL = "https://update.k3s.io/v1-release/channels/v{major}.{minor}"
DATA_DIR = "/var/lib/rancher/k3s/server/db"


class K3sUpgrade:
    """The `UpgradeDriver` of the k3s installer (`installer` gives the binary and readiness steps)."""

    def __init__(self, installer, kubectl: str, src: str):
        self.installer = installer
        self.kubectl = kubectl
        self.src = src

    async def upgrade_node(self, ctx: StageContext, node: Node, r: Remote, version: str, first: bool) -> list[str]:
        did = await self.installer._install_binary(node, r, version, self.src) or [f"k3s {version} staged"]
        unit = k3s_args.unit_name(node)
        ctx.progress(node.name, f"restarting {unit} on k3s {version}")
        await r.run(f"systemctl daemon-reload && systemctl restart {unit}", sudo=True, timeout=900)
        await self.installer._wait_local(ctx, node, r)
        return [*did, f"{unit} restarted"]

    async def snapshot(self, ctx: StageContext, r: Remote, name: str) -> tuple[str | None, str]:
        """`k3s etcd-snapshot save` when the server runs embedded etcd; SQLite clusters say why not."""
        if not (await r.run(f"test -d {DATA_DIR}/etcd", sudo=True, check=False)).ok:
            return None, (f"{r.label} runs k3s on its SQLite datastore, not embedded etcd; copy "
                          f"{DATA_DIR}/state.db to keep a backup")
        res = await r.run(f"k3s etcd-snapshot save --name {shlex.quote(name)}", sudo=True, check=False, timeout=300)
        if not res.ok:
            raise StageError(f"{r.label}: `k3s etcd-snapshot save` failed before the upgrade, nothing was changed: "
                             f"{(res.stderr or res.stdout).strip()[-500:]}")
        found = await r.run(f"ls -1t {DATA_DIR}/snapshots/{shlex.quote(name)}-* 2>/dev/null | head -n1",
                            sudo=True, check=False)
        path = found.stdout.strip()
        if not path:
            raise StageError(f"{r.label}: k3s reported a snapshot, but none named {name}-* is in {DATA_DIR}/snapshots")
        return path, ""

    async def hop_version(self, ctx: StageContext, minor: tuple[int, int]) -> str:
        if self.src == kube.SOURCE_PREINSTALLED:
            raise StageError(f"installer_source=preinstalled cannot walk through v{minor[0]}.{minor[1]}: "
                             "kubitect cannot stage binaries it does not download; upgrade one minor at a time")
        return await kube.latest_release(CHANNEL_URL.format(major=minor[0], minor=minor[1]),
                                         f"v{minor[0]}.{minor[1]}")
