"""The Kubitect config as pydantic models: the single source of truth for schema and validation.

Attribute names are the snake_case form of the YAML keys; the YAML key is the alias
(`config.cluster.node_template.os.network_interface` <-> `nodeTemplate.os.networkInterface`).
Fields whose default depends on other fields or on the installed plugins (gateway, image source,
NIC, VRID, host of an instance, kubernetes version, a host's provider, the load balancer
implementation and the manager) are None here and filled by `resolve.fill_defaults`.
Cross-field rules live in `rules.py`, so they can run even when part of the file is invalid.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubitect_core.config.fieldtypes import (
    IP,
    AlnumHyp,
    AlnumHypUs,
    CIDRv4,
    IfName,
    InstanceId,
    IPv4,
    KubeVersion,
    LabelValue,
    Mac,
    NonEmpty,
    Port,
    Positive,
    StrictVersion,
    Taint,
    Uint8,
)

DISTROS = ("ubuntu20", "ubuntu22", "ubuntu24", "debian11", "debian12", "debian13", "centos9", "rocky9")
Distro = Literal["ubuntu20", "ubuntu22", "ubuntu24", "debian11", "debian12", "debian13", "centos9", "rocky9"]
DEFAULT_POOL_PATH = "/var/lib/libvirt/images/"


class Model(BaseModel):
    """Strict keys, camelCase aliases, snake_case attributes."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=False,
    )


# ---------------------------------------------------------------- hosts
class HostSsh(Model):
    """SSH access to a remote host (libvirt URI qemu+ssh://user@ip:port/system?keyfile=...)."""

    keyfile: NonEmpty | None = Field(
        None, description="Password-less private key for the remote host; default: the IdentityFile "
                          "~/.ssh/config names for it, else ~/.ssh/id_rsa.")
    port: Port = Field(22, description="SSH port; when not set, ~/.ssh/config's Port for the host, else 22.")
    verify: bool = Field(False, description="true: the host key must already be in ~/.ssh/known_hosts; "
                                            "false: it is pinned on first contact. A changed key is "
                                            "refused either way.")


class Connection(Model):
    """How kubitect reaches the host: this machine (local) or over SSH (remote)."""

    type: Literal["local", "localhost", "remote"] = Field(description="One of local, localhost (the same) or remote.")
    ip: IPv4 | None = None
    user: AlnumHypUs | None = None
    ssh: HostSsh = Field(default_factory=HostSsh)

    @property
    def is_local(self) -> bool:
        return self.type in ("local", "localhost")


class DataResourcePool(Model):
    """An extra storage pool on the host; data disks refer to it by name."""

    name: AlnumHyp = Field(description="Pool name, unique per host (letters, digits and -).")
    path: NonEmpty = DEFAULT_POOL_PATH


class Host(Model):
    """A physical machine that runs cluster VMs."""

    name: AlnumHypUs = Field(description="Unique host name (letters, digits, - and _).")
    default: bool = False
    connection: Connection = Field(description="How to reach the host (type: local or remote).")
    main_resource_pool_path: NonEmpty = DEFAULT_POOL_PATH
    data_resource_pools: list[DataResourcePool] = Field(default_factory=list)
    provider: str | None = Field(None, description="VM provider serving this host (an installed plugin; "
                                                  "`kubitect list plugins`). Defaults to the installed "
                                                  "provider that declares itself the default.")


# ---------------------------------------------------------------- cluster.network
class Network(Model):
    """The network of the nodes: a libvirt NAT/routed network, or an existing bridge."""

    mode: Literal["nat", "route", "bridge"] = "nat"
    cidr: CIDRv4 = Field(description="IPv4 network of the nodes in CIDR notation, e.g. 10.10.0.0/20.")
    gateway: IPv4 | None = Field(None, description="Defaults to the first host address of the CIDR.")
    bridge: IfName | None = Field(None, description="Existing host bridge; required in bridge mode.")


# ---------------------------------------------------------------- cluster.nodeTemplate
class Os(Model):
    """The node operating system image."""

    distro: Distro = "ubuntu22"
    source: NonEmpty | None = Field(None, description="Image URL or local path; defaults per distro.")
    network_interface: IfName | None = Field(None, description="NIC inside the VM; defaults per distro.")


class NodeTemplateSsh(Model):
    """The SSH key pair used to reach the nodes."""

    private_key_path: NonEmpty | None = Field(
        None, description="Existing private key (with <path>.pub) for the nodes; else one is generated."
    )
    add_to_known_hosts: bool = False


class NodeTemplate(Model):
    """Settings shared by every node VM."""

    user: AlnumHypUs = "k8s"
    os: Os = Field(default_factory=Os)
    dns: list[IP] = Field(default_factory=list)
    cpu_mode: Literal["custom", "host-model", "host-passthrough", "maximum"] = "custom"
    update_on_boot: bool = True
    ssh: NodeTemplateSsh = Field(default_factory=NodeTemplateSsh)


# ---------------------------------------------------------------- cluster.nodes
class DataDisk(Model):
    """An extra raw disk for a node (e.g. for Rook), in the main or a data resource pool."""

    name: AlnumHyp = Field(description="Disk name, unique per instance.")
    pool: AlnumHyp = "main"
    size: Positive = Field(description="Size in GiB.")


class Resources(Model):
    """vCPUs, RAM and main disk size of a node; unset values come from `default`, then 2/4/32."""

    cpu: Positive | None = None
    ram: Positive | None = Field(None, description="GiB")
    main_disk_size: Positive | None = Field(None, description="GiB")


class LbDefault(Resources):
    """Defaults for every load balancer instance."""


class KubernetesNodeFields(Model):
    """What masters and workers carry beyond resources, at role default and instance level."""

    labels: dict[str, LabelValue] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    data_disks: list[DataDisk] = Field(default_factory=list)


class NodeDefault(KubernetesNodeFields, Resources):
    """Defaults merged into every instance of the role (the instance wins on a clash)."""


class Instance(Resources):
    """One node VM; its name is <cluster>-<role>-<id>."""

    id: InstanceId = Field(description="Unique id within the role (letters, digits, - and _).")
    host: AlnumHypUs | None = Field(None, description="Host name; defaults to the default host.")
    ip: IPv4 | None = Field(None, description="Static IP inside the CIDR; DHCP when omitted (nat only).")
    mac: Mac | None = None


class LbInstance(Instance):
    """One load balancer VM (HAProxy + keepalived)."""

    priority: Uint8 = Field(10, description="keepalived priority; the highest becomes MASTER.")


class NodeInstance(KubernetesNodeFields, Instance):
    """One Kubernetes node VM."""


class ForwardPort(Model):
    """A port the load balancers forward to the nodes (e.g. 80/443 for an ingress)."""

    name: AlnumHypUs = Field(description="Unique name of the forwarded port.")
    port: Port = Field(description="Port the load balancers listen on (1-65535, not 22 or 6443).")
    target_port: Port | None = Field(None, description="Defaults to `port`.")
    target: Literal["workers", "masters", "all"] = "workers"


class LoadBalancerNodes(Model):
    """Load balancers in front of the control plane; several share a VIP through VRRP."""

    implementation: str | None = Field(
        None,
        description="Load balancer plugin serving the endpoint (kubitect extension; `kubitect list plugins`). "
                    "Defaults to the installed load balancer that declares itself the default.",
    )
    vip: IPv4 | None = None
    virtual_router_id: Uint8 | None = Field(
        None, description="keepalived VRID; defaults to a stable hash of the cluster name (1-255)."
    )
    default: LbDefault = Field(default_factory=LbDefault)
    forward_ports: list[ForwardPort] = Field(default_factory=list)
    instances: list[LbInstance] = Field(default_factory=list)


class RoleNodes(Model):
    """Masters or workers: defaults and instances."""

    default: NodeDefault = Field(default_factory=NodeDefault)
    instances: list[NodeInstance] = Field(default_factory=list)


class Nodes(Model):
    """The VMs of the cluster by role."""

    load_balancer: LoadBalancerNodes = Field(default_factory=LoadBalancerNodes)
    master: RoleNodes = Field(default_factory=RoleNodes)
    worker: RoleNodes = Field(default_factory=RoleNodes)


class Cluster(Model):
    """The cluster: its name, network, node template and nodes."""

    name: AlnumHyp = Field(description="Cluster name (letters, digits and -); prefixes every resource.")
    network: Network = Field(description="The node network (mode, cidr, gateway, bridge).")
    node_template: NodeTemplate = Field(default_factory=NodeTemplate)
    nodes: Nodes = Field(default_factory=Nodes)


# ---------------------------------------------------------------- kubernetes, addons
class KubernetesOther(Model):
    """Extra Kubernetes options."""

    auto_renew_certificates: bool = False
    merge_kubeconfig: bool = False


class Kubernetes(Model):
    """What Kubernetes to install and how."""

    version: KubeVersion | None = Field(None, description="vMAJOR.MINOR.PATCH within the installer's range.")
    manager: str | None = Field(None, description="Installer plugin name (`kubitect list plugins`); defaults to "
                                                 "the installed installer that declares itself the default.")
    network_plugin: Literal["calico", "cilium", "flannel", "kube-router"] = "calico"
    dns_mode: Literal["coredns"] = "coredns"
    other: KubernetesOther = Field(default_factory=KubernetesOther)


class Rook(Model):
    """The Rook/Ceph storage addon."""

    enabled: bool = False
    version: StrictVersion | None = None
    node_selector: dict[str, LabelValue] = Field(default_factory=dict)


class Addons(Model):
    """Optional addons."""

    kubespray: dict[str, Any] | None = Field(None, description="Kept for compatibility; not applied.")
    rook: Rook = Field(default_factory=Rook)


class Config(Model):
    """A whole Kubitect config file."""

    hosts: list[Host] = Field(description="The physical hosts (at least one).")
    cluster: Cluster = Field(description="The cluster: name, network, nodeTemplate, nodes.")
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    addons: Addons = Field(default_factory=Addons)

    def host(self, name: str) -> Host | None:
        """The host named `name`, or None."""
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def default_host(self) -> Host:
        """The host that runs instances which name none: `default: true`, else the first."""
        return next((h for h in self.hosts if h.default), self.hosts[0])
