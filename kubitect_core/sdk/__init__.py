"""The kubitect plugin SDK: the one part of kubitect a plugin may import.

A plugin (built-in or a third party's) imports `kubitect_core.sdk` and its submodules, and
nothing else of kubitect: not another plugin, not the engine, the config loader or the state
files. A lint rule enforces it (ruff's banned imports, `[tool.ruff.lint.flake8-tidy-imports]`
in pyproject.toml, for plugins/ and examples/plugins/), and a unit test proves that rule bites.
Everything here is re-exported from where it is implemented, so the implementation can move
without breaking plugins.

The flat names:

    hookimpl                 marks a plugin's hook functions (the contract: kubitect_core.hookspecs)
    Change, Action           one thing a layer would do / did ("create", "change", "delete", "keep")
    StageContext             what a plugin reads while converging a layer (config, topology, record)
    SshAccess, ProgressFn    the cluster key pair and known_hosts; the progress callback's shape
    ConfigExtension          a config key a plugin adds and validates with its own pydantic model
    VmProvider, MachineLayer, LoadBalancer, KubernetesInstaller, LayerPlugin
                             the protocols a plugin's objects satisfy (checked when loaded)
    Stage                    base class of a stage a plugin adds to the pipeline
    Topology, Node, DataDisk the as-built nodes, endpoint, VIP and VRID every plugin reads
    data_disk_serial, data_disk_by_id, check_serials_distinct
                             a data disk's stable serial and the guest's /dev/disk/by-id path
    StageError, StageSkipped errors a plugin raises: a message for the user, or "cannot run here"
    Remote, NodePool, Result, RemoteError, HostKeyChanged, HostKeyUnknown
                             commands and files on nodes over asyncssh, with pinned host keys
    write_private, write_atomic
                             files written whole (0600 for secrets)
    normalize_version, parse_version
                             Kubernetes versions as the config spells them (v1.34.2)
    templates(anchor)        the jinja2 environment of the templates next to a plugin module

The submodules, for one kind of plugin each:

    kubitect_core.sdk.remote       the remote-execution layer itself (connect, wait_reachable, pins)
    kubitect_core.sdk.known_hosts  OpenSSH's own files: ssh_config, the user's known_hosts
    kubitect_core.sdk.kube         what every Kubernetes installer needs (endpoint, SANs, CNI, kubeconfig)
    kubitect_core.sdk.etcd         etcdctl on a control plane: members, quorum, snapshot, restore
    kubitect_core.sdk.images       node images kubitect builds (for VM providers)
    kubitect_core.sdk.netns        network-namespace facts (for providers that make bridges)
    kubitect_core.sdk.conformance  fixtures and helpers for a plugin's own conformance modules
"""

from kubitect_core.config.versions import normalize as normalize_version
from kubitect_core.config.versions import parse_version
from kubitect_core.contracts import (
    Action,
    Change,
    ConfigExtension,
    KubernetesInstaller,
    LayerPlugin,
    LoadBalancer,
    MachineLayer,
    ProgressFn,
    SshAccess,
    StageContext,
    VmProvider,
)
from kubitect_core.hookspecs import hookimpl
from kubitect_core.remote import HostKeyChanged, HostKeyUnknown, NodePool, Remote, RemoteError, Result
from kubitect_core.sdk.templates import templates
from kubitect_core.stage import Stage, StageError, StageSkipped
from kubitect_core.state import write_atomic, write_private
from kubitect_core.topology import (
    DataDisk,
    Node,
    Topology,
    check_serials_distinct,
    data_disk_by_id,
    data_disk_serial,
)

__all__ = [
    "Action", "Change", "ConfigExtension", "DataDisk", "HostKeyChanged", "HostKeyUnknown", "KubernetesInstaller",
    "LayerPlugin", "LoadBalancer", "MachineLayer", "Node", "NodePool", "ProgressFn", "Remote", "RemoteError", "Result",
    "SshAccess", "Stage", "StageContext", "StageError", "StageSkipped", "Topology", "VmProvider", "hookimpl",
    "normalize_version", "parse_version", "templates", "write_atomic", "write_private", "check_serials_distinct",
    "data_disk_by_id", "data_disk_serial",
]
