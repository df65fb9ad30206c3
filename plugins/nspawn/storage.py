"""storage layer: per-node state directories, SSH host keys and sparse data disks.

Layout under the cluster directory (all of it removed by destroy):

    nspawn/<node>/ssh_host_ed25519_key(.pub)   the node's own host key, made here so kubitect
                                               pins it before the first contact (no trust on
                                               first use) and it survives container restarts
    nspawn/<node>/sshd.conf                    drop-in: that key only, no passwords
    nspawn/<node>/disks/<disk>.img             sparse data disk, seen in the node at
                                               /var/lib/kubitect/disks/<disk>.img
    nspawn/<node>/console.log                  systemd-nspawn's output
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubitect_core.sdk import Change, Node, StageContext, lazy_import

from .host import NspawnError, cluster_id, find_nodes, remove_cgroups, stop_process
from .settings import my_nodes, nodes_dir

asyncssh = lazy_import("asyncssh")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

GIB = 1024**3
SSHD_DROPIN = """\
# Written by kubitect: this node's own host key, key-only logins.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""


def node_dir(ctx: StageContext, name: str) -> Path:
    return nodes_dir(ctx) / name


def disk_paths(ctx: StageContext, node: Node) -> dict[str, Path]:
    """Data disk name -> sparse file on this machine."""
    return {d.name: node_dir(ctx, node.name) / "disks" / f"{d.name}.img" for d in node.data_disks}


def host_key_path(ctx: StageContext, name: str) -> Path:
    return node_dir(ctx, name) / "ssh_host_ed25519_key"


def _wanted(ctx: StageContext, node: Node) -> list[tuple[str, Path, int]]:
    sizes = {d.name: d.size_gib * GIB for d in node.data_disks}
    return [(disk, path, sizes[disk]) for disk, path in disk_paths(ctx, node).items()]


def _plan_node(ctx: StageContext, node: Node) -> list[Change]:
    changes = []
    ndir = node_dir(ctx, node.name)
    if not host_key_path(ctx, node.name).exists():
        changes.append(Change("create", "node-dir", node.name, node.host, str(ndir)))
    for disk, path, size in _wanted(ctx, node):
        vol = f"{node.name}/{disk}"
        if not path.exists():
            changes.append(Change("create", "volume", vol, node.host, f"{size // GIB} GiB sparse"))
        elif path.stat().st_size != size:
            if path.stat().st_size > size:
                raise NspawnError(
                    f"node {node.name}: data disk '{disk}' is {path.stat().st_size // GIB} GiB, the "
                    f"config asks for {size // GIB} GiB; shrinking would lose data (grow it or "
                    "destroy the node first)"
                )
            changes.append(Change("change", "volume", vol, node.host, f"grow to {size // GIB} GiB"))
        else:
            changes.append(Change("keep", "volume", vol, node.host))
    return changes


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def ensure_node_files(ctx: StageContext, node: Node) -> list[Change]:
    """Creates what is missing for one node (idempotent); returns what it did per object."""
    changes = _plan_node(ctx, node)
    ndir = node_dir(ctx, node.name)
    (ndir / "disks").mkdir(parents=True, exist_ok=True)
    os.chmod(ndir, 0o700)
    key_path = host_key_path(ctx, node.name)
    if not key_path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{node.name}-host")
        _write_private(key_path, key.export_private_key("openssh"))
        Path(f"{key_path}.pub").write_bytes(key.export_public_key("openssh"))
    (ndir / "sshd.conf").write_text(SSHD_DROPIN)
    for _disk, path, size in _wanted(ctx, node):
        if not path.exists() or path.stat().st_size < size:
            with open(path, "ab") as fh:
                fh.truncate(size)  # sparse: no blocks until the node writes
    return changes


def _stale(ctx: StageContext, nodes: list[Node]) -> list[str]:
    wanted = {n.name for n in nodes}
    recorded = set(ctx.record.get("nodes", {}))
    return sorted(recorded - wanted)


async def plan(ctx: StageContext, hosts: list[str]) -> list[Change]:
    nodes = my_nodes(ctx, hosts)
    changes = [c for n in nodes for c in _plan_node(ctx, n)]
    changes += [Change("delete", "node-dir", name) for name in _stale(ctx, nodes)]
    return changes


async def apply(ctx: StageContext, hosts: list[str]) -> list[Change]:
    """Makes every node's directory, host key and disks; removes those of nodes no longer wanted."""
    nodes = my_nodes(ctx, hosts)
    record = ctx.record.setdefault("nodes", {})
    changes: list[Change] = []
    for node in nodes:
        changes += ensure_node_files(ctx, node)
        record[node.name] = {
            "dir": str(node_dir(ctx, node.name)),
            "host": node.host,
            "disks": {d: str(p) for d, p in disk_paths(ctx, node).items()},
        }
    running = find_nodes(cluster_id(ctx.cluster_dir))
    for name in _stale(ctx, nodes):
        if name in running:  # a node leaving the cluster: stop it before its disks go
            ctx.progress(name, "stopping container: the node was removed from the config")
            await stop_process(running[name])
            await remove_cgroups(name)
        shutil.rmtree(node_dir(ctx, name), ignore_errors=True)
        record.pop(name, None)
        changes.append(Change("delete", "node-dir", name))
    return changes or [Change("keep", "node-dir", n.name, n.host) for n in nodes]


async def destroy(ctx: StageContext, hosts: list[str]) -> list[Change]:
    """Removes all node directories (disks included); stops a container still running first."""
    for name, pid in find_nodes(cluster_id(ctx.cluster_dir)).items():
        ctx.progress(name, "stopping container before removing its disks")
        await stop_process(pid)
    base = nodes_dir(ctx)
    changes = []
    if base.is_dir():
        for child in sorted(base.iterdir()):
            if child.is_dir():
                changes.append(Change("delete", "node-dir", child.name, detail=str(child)))
        shutil.rmtree(base)
    ctx.record.pop("nodes", None)
    return changes
