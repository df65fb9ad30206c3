"""The cluster's SSH key pair: generated once per cluster, or copied from privateKeyPath."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from kubitect_core.contracts import SshAccess
from kubitect_core.state import ClusterState, write_private


class ClusterKeyError(Exception):
    """The configured private key cannot be used; the message names the path."""


def ensure_cluster_key(state: ClusterState, user: str, private_key_path: str | None = None) -> SshAccess:
    """Returns the cluster's SSH access, creating the key pair on first use.

    A generated key is ed25519 (small, fast, no RSA-4096 generation delay like the original).
    A user-supplied `privateKeyPath` is copied once, with its `.pub`; a missing file is an
    error naming the path rather than a failure deep inside a provider.
    """
    ssh_dir = state.ssh_dir
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    private, public = ssh_dir / "id_ed25519", ssh_dir / "id_ed25519.pub"
    known_hosts = ssh_dir / "known_hosts"
    if not private.exists():
        if private_key_path:
            src = Path(private_key_path).expanduser()
            for need in (src, Path(f"{src}.pub")):
                if not need.is_file():
                    raise ClusterKeyError(f"nodeTemplate.ssh.privateKeyPath: {need} does not exist")
            write_private(private, src.read_bytes())
            public.write_text(Path(f"{src}.pub").read_text())
        else:
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"kubitect-{state.name}")
            write_private(private, key.export_private_key())
            public.write_text(key.export_public_key().decode())
    if not known_hosts.exists():
        write_private(known_hosts, "")
    return SshAccess(user=user, private_key=private, public_key=public, known_hosts=known_hosts)
