"""The objects that cross the line between stages (core) and plugins (one technology each).

`hookspecs.py` says *when* a plugin is asked for something; this module says *what* it hands
back. A VM provider, a load balancer and a Kubernetes installer are plain objects with async
methods, so a plugin can keep a connection or a cache between calls within one run.

Every converge method follows one rule: it is idempotent. Called twice with the same context,
the second call changes nothing and returns no `Change` with an action other than "keep".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kubitect_core.contract_check import optional
from kubitect_core.topology import Node, Topology

if TYPE_CHECKING:
    from kubitect_core.config.models import Config

Action = Literal["create", "change", "delete", "keep"]


@dataclass(frozen=True)
class Change:
    """One thing a stage would do (plan) or did (apply): what, to which object, on which host."""

    action: Action
    kind: str  # "network", "pool", "volume", "domain", "container", "service", "file", "node", ...
    name: str
    host: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = f" on {self.host}" if self.host else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.action} {self.kind} {self.name}{where}{extra}"


@dataclass
class SshAccess:
    """How plugins reach the nodes: the cluster key pair and the pinned known_hosts file."""

    user: str
    private_key: Path
    public_key: Path
    known_hosts: Path

    def public_key_text(self) -> str:
        return self.public_key.read_text().strip()


ProgressFn = Callable[[str, str], None]  # (subject, message): "lb-1", "waiting for SSH"


@dataclass
class StageContext:
    """Everything a plugin may read while converging one layer of one cluster.

    `topology` is THE place to read nodes and their addresses from: the as-built topology.
    For every stage after the machine stages (loadbalancers, kubernetes, verify, third-party
    stages) the engine builds it from the config's topology with what the vms stage recorded
    laid over it (`kubitect_core.topology.as_built`): each recorded node carries the recorded
    `ip`, `mac`, `host` and `domain`, and `endpoint` follows those addresses. A node the vms stage
    has not recorded yet keeps the config's values: a DHCP node (`dhcp=True`, nat mode without
    an IP) then has `ip=None`, which is what a plan on a fresh cluster sees, and a plugin must
    cope with it (plan: "address assigned by DHCP", `Node.address`). The machine stages
    (network, storage, vms; `Stage.config_topology`) get the config's topology instead, since
    their providers converge to the config and keep what they made in their own `record`.
    Plugins never read node addresses from `facts["vms"]` or from the config.

    `record` is the stage's own slice of the recorded state (a JSON-able dict). A plugin writes
    what now exists into it (e.g. `record["domains"]["k8s-master-1"] = {...}`); the engine saves it
    after every call, also after a failure, so a re-run knows what was already made.
    `facts` is read-only: what earlier stages recorded, by stage name (e.g.
    `facts["loadbalancers"]["endpoint"]`).
    """

    cluster: str
    config: Config | None  # defaults resolved; None only while destroying a cluster whose config is unreadable
    topology: Topology
    cluster_dir: Path
    home: Path
    ssh: SshAccess
    record: dict[str, Any]
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: ProgressFn = lambda subject, message: None
    extensions: dict[str, Any] = field(default_factory=dict)  # validated plugin config extensions
    # CLI flags (e.g. "failover": True); during `kubitect destroy`, "machines_deleted" is True: the
    # machine layers delete every VM after the layers above them, which may skip per-node cleanup.
    options: dict[str, Any] = field(default_factory=dict)
    # Saves `record` now. Call it right after creating each object, so an interrupted apply
    # leaves a record of what exists and the re-run neither duplicates nor forgets it.
    checkpoint: Callable[[], None] = lambda: None


class LayerPlugin(Protocol):
    """The shape shared by every implementation behind a delegating stage (load balancer, installer).

    Each method gets the stage's context (`ctx.record` is the stage's own record) and returns the
    changes it planned or made; the stage records them and reports progress.
    """

    async def plan(self, ctx: StageContext) -> list[Change]:
        """Dry run: what apply would create, change or delete. Touches nothing."""
        ...

    async def apply(self, ctx: StageContext) -> list[Change]:
        """Converge this layer; returns what it did (only "keep" when nothing changed)."""
        ...

    async def destroy(self, ctx: StageContext) -> list[Change]:
        """Remove everything this layer made for the cluster, also when `ctx.record` is empty."""
        ...


class MachineLayer(Protocol):
    """One machine layer of a VM provider (`network`, `storage` or `vms`) on the hosts that select it.

    `hosts` are the names of the config's hosts (`hosts[].name`) that select this provider, or,
    when the config cannot be read during destroy, the hosts this provider recorded. `ctx.record`
    is this provider's own slice of the stage's record.
    """

    async def plan(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Dry run on these hosts: what apply would create, change or delete. Touches nothing."""
        ...

    async def apply(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Converge this layer on these hosts; a second call returns only "keep"."""
        ...

    async def destroy(self, ctx: StageContext, hosts: list[str]) -> list[Change]:
        """Remove what this layer made for the cluster on these hosts, also when `ctx.record` is
        empty (find the objects by the cluster's ownership tag)."""
        ...


class VmProvider(Protocol):
    """A VM provider (libvirt, nspawn, a third party's) behind the network, storage and vms stages.

    A provider is three layer objects, one per machine stage, plus a preflight check; the
    network stage calls `network`, the storage stage `storage`, the vms stage `vms`, each for the
    hosts that select the provider (`hosts[].provider`). `ctx.topology` is the config's topology
    here (a DHCP node has `ip=None`).

    The vms layer must leave every node reachable over SSH as `ctx.ssh.user` with the cluster
    key, at the address the config gives or, for a DHCP node, at the address it was leased, and
    record per node, in `ctx.record["nodes"][<node name>]` (what the engine builds the as-built
    topology from for every later stage, see `kubitect_core.topology.as_built`):

        name    the node's name (the topology's `Node.name`)
        host    the host it runs on (a `hosts[].name`)
        ip      the IPv4 address it answers SSH at; for a DHCP node the lease, recorded as soon as
                it is known (checkpoint) and never a stale one: a provider that finds a node's
                address changed since it was recorded fails with a clear error (or keeps it stable,
                e.g. with a DHCP reservation), it does not silently record the new one
        mac     the MAC of its cluster NIC (lower case)
        domain  the machine's name on the host (libvirt domain, nspawn machine)

    plus whatever else the provider needs (volumes, pids, ...). A node gone from the config is
    removed from the record when its machine is deleted.
    """

    name: str
    network: MachineLayer
    storage: MachineLayer
    vms: MachineLayer
    # True: this provider serves every host whose `provider` the config leaves out. Exactly one
    # installed provider may claim it (Kubitect's users expect libvirt there).
    default: bool = False

    async def preflight(self, ctx: StageContext, hosts: list[str]) -> list[str]:
        """Machine checks (host reachable, bridge exists, free memory); returns problems found."""
        ...

    @optional
    def power_off(self, record: dict[str, Any], host: str, names: list[str]) -> dict[str, float]:
        """Capability: stop the named machines on `host` at once, as a power cut would (the
        host-loss conformance case, `verify --chaos host`); `record` is the provider's vms record.
        Returns {node: monotonic time it stopped}. A provider without it cannot run that case."""
        ...


class LoadBalancer(LayerPlugin, Protocol):
    """The control-plane load balancer / VIP implementation (keepalived-haproxy, kube-vip, ...).

    apply must record `ctx.record["endpoint"]` (the address clients use for the API server) and
    `ctx.record["vip"]` (or None).
    """

    name: str
    # True: used when `cluster.nodes.loadBalancer.implementation` is left out; one may claim it.
    default: bool = False


class KubernetesInstaller(LayerPlugin, Protocol):
    """A Kubernetes installer (kubeadm, k3s, ...). apply records `ctx.record["kubeconfig"]`."""

    name: str
    # Inclusive range of installable versions, e.g. ("1.28.0", "1.35.99"); validation uses it.
    supported_versions: tuple[str, str]
    # Versions below this are end of life upstream: accepted with a warning.
    maintained_from: str
    # True: used when `kubernetes.manager` is left out; one installed installer may claim it.
    default: bool = False
    # Other `kubernetes.manager` names this installer serves, each with why, e.g. a legacy name:
    # {"kubespray": "what Kubespray runs underneath"}. Validation notes the substitution.
    aliases: Mapping[str, str] = {}

    def internet_reason(self, ctx: StageContext) -> str | None:
        """None when what apply downloads is reachable from here (or nothing is), else why not.

        Called (in a worker thread, so it may block, briefly and bounded) before apply; a reason
        makes the stage skipped rather than failed, since a missing internet connection is not
        the config's fault.
        """
        ...

    @optional
    async def remove_nodes(self, ctx: StageContext, nodes: list[Node], dry_run: bool) -> list[Change]:
        """Capability: take the leaving `nodes` (an apply removes them from the config) out of the
        cluster before their machines are deleted: cordon, drain, stop the kubelet, delete the
        Node. Called by the engine after the `kubitect_nodes_leaving` hook and before the machine
        stages, with the kubernetes stage's context; `dry_run` (plan): say what, touch nothing.
        Nodes it never made members (load balancers, a node that never joined) are ignored.
        Raises StageError (naming the node and the pods that block) to stop the apply before any
        machine is deleted; a re-run starts over with the nodes still recorded. An installer
        without it cannot scale in: the engine refuses to delete its members' machines."""
        ...


@dataclass(frozen=True)
class ConfigExtension:
    """A key a plugin adds to the config at `path` (dot path of a mapping), validated by `model`.

    Example: the keepalived-haproxy plugin adds `vrrp` under `cluster.nodes.loadBalancer`
    (advertInt, unicast, preempt). An original Kubitect config, which lacks the key, still
    validates: the model's defaults apply.
    """

    path: str
    key: str
    model: type  # a pydantic BaseModel subclass
    plugin: str = ""
    # Optional warnings about the validated value in the context of the whole config:
    # check(value, topology) -> [(config path as a tuple of keys, message)]. Called only for a
    # config without errors; the messages are shown as warnings (with the YAML line), never block.
    check: Callable[[Any, Topology], list[tuple[tuple, str]]] | None = None
