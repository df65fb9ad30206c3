"""SDK: the remote-execution layer (asyncssh), for plugins that reach machines themselves.

Most plugins only need `Remote`/`NodePool` (flat in `kubitect_core.sdk`). A VM provider also
waits for a fresh machine (`wait_reachable`), connects to a host with the user's ssh_config
(`connect`), and pins or forgets host keys in the cluster's known_hosts (`pin_key`,
`forget_host`; for many machines in one rewrite of the file `pin_many`, keyed by
`known_hosts_pattern`, and `forget_hosts`): first contact records a key, a changed key is refused.
"""

from kubitect_core.known_hosts import pin_many
from kubitect_core.remote import (
    HostKeyChanged,
    HostKeyUnknown,
    NodePool,
    Remote,
    RemoteError,
    Result,
    connect,
    export_ssh_config,
    forget_host,
    forget_hosts,
    known_hosts_pattern,
    pin_key,
    pinned_keys,
    wait_reachable,
)

__all__ = [
    "HostKeyChanged", "HostKeyUnknown", "NodePool", "Remote", "RemoteError", "Result", "connect",
    "export_ssh_config", "forget_host", "forget_hosts", "known_hosts_pattern", "pin_key", "pin_many", "pinned_keys",
    "wait_reachable",
]
