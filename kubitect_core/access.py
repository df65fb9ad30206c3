"""Reaching a cluster's nodes between runs: `kubitect ssh`, `kubitect export ssh-config`, `status`.

Why a module of its own: outside a run there is no StageContext, yet a user's ssh session must
use exactly what the run used: the stored config's nodes with the addresses the vms stage
recorded (DHCP leases included), the cluster's own key, and the pinned known_hosts (never the
user's, never trust-on-first-use). A node is named as the cluster names it (`<cluster>-master-1`),
by its short name (`master-1`) or by its address.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from kubitect_core.state import ClusterState, StateError
from kubitect_core.topology import Node, Topology

SSH_CONFIG_NAME = "config"  # in the cluster's ssh directory, beside the key and known_hosts


class AccessError(StateError):
    """The cluster or node cannot be reached as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ClusterAccess:
    cluster: str
    user: str
    key: Path
    known_hosts: Path
    topology: Topology
    state: ClusterState

    @property
    def ssh_config(self) -> Path:
        return self.state.ssh_dir / SSH_CONFIG_NAME

    def node(self, wanted: str) -> Node:
        """The node called `wanted` (full name, name without the cluster prefix, or address)."""
        nodes = self.topology.nodes
        for n in nodes:
            if wanted in (n.name, n.name.removeprefix(f"{self.cluster}-"), n.ip):
                return n
        names = [n.name for n in nodes]
        close = difflib.get_close_matches(wanted, names + [n.removeprefix(f"{self.cluster}-") for n in names], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise AccessError(f"cluster '{self.cluster}' has no node '{wanted}'.{hint} "
                          f"Its nodes: {', '.join(names) or 'none'}")

    def reachable(self) -> list[Node]:
        """Nodes with a known address (a DHCP node has none until the vms stage recorded its lease)."""
        return [n for n in self.topology.nodes if n.ip]


def open_access(home: Path, cluster: str, registry=None) -> ClusterAccess:
    """The cluster's nodes as built, with the key and pinned host keys to reach them.

    Raises AccessError when the cluster does not exist or was never given machines and keys.
    """
    from kubitect_core.config import ConfigError
    from kubitect_core.engine import Engine
    from kubitect_core.keys import KEY_NAME
    from kubitect_core.topology import RecordError, as_built, recorded_nodes

    state = ClusterState(home, cluster)
    text = state.config_text() if state.exists() else None
    if text is None:
        raise AccessError(f"cluster '{cluster}' does not exist (in {state.dir.parent})")
    if registry is None:
        from kubitect_core.plugins import load_registry

        registry = load_registry()
    engine = Engine(home, registry, local=cluster.startswith("local-"))
    try:
        loaded = engine.load_raw(text, str(state.config_path))
    except ConfigError as exc:
        first = exc.issues[0] if exc.issues else None
        raise AccessError(f"{state.config_path}: the stored config is not valid any more: "
                          f"{first.message if first else exc}") from None
    record = state.load_record()
    vms = record.get("stages", {}).get("vms", {}).get("data") or {}
    try:
        topology = as_built(loaded.topology, recorded_nodes(vms))
    except RecordError as exc:
        raise AccessError(f"{state.record_path}: {exc}") from None
    key = state.ssh_dir / KEY_NAME
    if not key.is_file():
        raise AccessError(f"cluster '{cluster}' has no SSH key yet ({key}): apply it first")
    return ClusterAccess(cluster, loaded.config.cluster.node_template.user, key, state.ssh_dir / "known_hosts",
                         topology, state)


def write_ssh_config(access: ClusterAccess) -> Path:
    """Writes (0600) the OpenSSH client config for the cluster's nodes into its ssh directory:
    each node by name and address, the cluster key only, host keys checked strictly
    against the cluster's pinned known_hosts. Interactive use: no BatchMode, so a passphrase of a
    user-supplied key can be asked for."""
    from kubitect_core.remote import export_ssh_config

    nodes = access.reachable()
    if not nodes:
        raise AccessError(f"cluster '{access.cluster}' has no node with a known address yet: apply it first")
    return export_ssh_config(access.ssh_config, [(n.name, n.ip) for n in nodes], access.user, access.key,
                             access.known_hosts, batch=False)


def ssh_argv(access: ClusterAccess, node: Node, command: list[str], *, tty: bool) -> list[str]:
    """The ssh(1) command line for `kubitect ssh NODE [-- CMD...]`: like ssh itself, the words of
    CMD are joined by spaces and run by the node's login shell (so `-- 'journalctl | tail'` works)."""
    if not node.ip:
        raise AccessError(f"node {node.name} has no address yet ({node.address}): apply the cluster first")
    config = write_ssh_config(access)
    argv = ["ssh", "-F", str(config)]
    if command and tty:
        argv.append("-t")  # an interactive command (top, a shell) gets a terminal, as with kubectl exec -it
    return [*argv, node.name, *(["--", *command] if command else [])]
