"""Each libvirt node's SSH host key: made by kubitect, given to the VM, pinned before first contact.

Trusting a new VM on first contact would hand the kubeadm join secrets to whatever answers at its
address first. So the provider generates the node's ed25519 host key before the VM exists,
delivers it in the cloud-init seed (`ssh_keys`, with generation of other keys turned off), and
pins its public half in the cluster's known_hosts before the first SSH connection: a different
key is then refused like any changed key.

The private key is stored, 0600 in a 0700 directory of the cluster:

    <cluster>/libvirt/host-keys/<node>      OpenSSH private key (never logged)

Why stored rather than dropped once delivered: the seed is re-rendered on every apply and its
digest is part of the domain's spec, so a node whose key were made anew each run would show as
changed forever; and a VM re-created from the same seed (domain lost, disk re-made) must present
the key that is pinned. A node removed from the config, and every node at destroy, loses its key
file and its pin; if it comes back it gets a new key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kubitect_core.sdk import StageContext, lazy_import, remote, write_private

asyncssh = lazy_import("asyncssh")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

KEY_TYPE = "ssh-ed25519"
CLOUD_INIT_TYPE = "ed25519"  # the `ssh_keys` prefix cloud-init knows this type by


@dataclass(frozen=True)
class NodeHostKey:
    """A node's host key pair in OpenSSH formats; repr never shows the private half."""

    private_openssh: str = field(repr=False)
    public_openssh: str
    cloud_init_type: str = CLOUD_INIT_TYPE

    @property
    def public(self) -> asyncssh.SSHKey:
        return asyncssh.import_public_key(self.public_openssh)


class NodeKeyStore:
    """The cluster's node host keys, one file per node."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, node: str) -> Path:
        return self.directory / node

    def load(self, node: str) -> NodeHostKey | None:
        """The stored key of `node`, or None (never made, or unreadable: then made anew)."""
        try:
            text = self.path(node).read_text()
            key = asyncssh.import_private_key(text)
        except (OSError, asyncssh.KeyImportError, ValueError):
            return None
        # The file's text as stored: an OpenSSH export has a random check field, so exporting
        # again would change the seed (and the domain's spec) on every run.
        return NodeHostKey(text, key.export_public_key("openssh").decode().strip())

    def ensure(self, node: str) -> NodeHostKey:
        """The stored key of `node`, generated (and stored 0600) when there is none."""
        found = self.load(node)
        if found is not None:
            return found
        key = asyncssh.generate_private_key(KEY_TYPE, comment=f"{node}-host")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        private = key.export_private_key("openssh").decode()
        write_private(self.path(node), private)
        return NodeHostKey(private, key.export_public_key("openssh").decode().strip())

    def remove(self, node: str) -> bool:
        """Deletes a node's key file; True if there was one."""
        try:
            self.path(node).unlink()
            return True
        except FileNotFoundError:
            return False

    def remove_many(self, nodes: Iterable[str]) -> int:
        """Deletes many nodes' key files; how many there were.

        Why in parallel: on a filesystem mounted with `discard`, each unlink of a flushed file
        waits ~2 ms for the device; 1,000 removed nodes took 2 s one after the other."""
        names = list(nodes)
        if len(names) < 8:
            return sum(self.remove(n) for n in names)
        with ThreadPoolExecutor(max_workers=16) as pool:
            return sum(pool.map(self.remove, names))


def store_for(ctx: StageContext) -> NodeKeyStore:
    """The key store of the cluster a stage works on."""
    return NodeKeyStore(ctx.cluster_dir / "libvirt" / "host-keys")


def pin(ctx: StageContext, store: NodeKeyStore, nodes: Mapping[str, str | None]) -> bool:
    """Pins each node's generated key (name -> address) for its address before first contact,
    replacing any older key pinned there (kubitect made this one), in one rewrite of the cluster's
    known_hosts. Nodes without a stored key or an address are left out. True if the file changed."""
    keys = {}
    for node, ip in nodes.items():
        key = store.load(node) if ip else None
        if key is not None:
            keys[remote.known_hosts_pattern(ip, 22)] = key.public
    return remote.pin_many(Path(ctx.ssh.known_hosts), keys, replace=True)


def forget(ctx: StageContext, store: NodeKeyStore, nodes: Mapping[str, str | None]) -> None:
    """Nodes left the cluster (name -> address): their key files and pins go, the pins in one
    rewrite of the cluster's known_hosts."""
    store.remove_many(nodes)
    remote.forget_hosts(Path(ctx.ssh.known_hosts), [ip for ip in nodes.values() if ip])
