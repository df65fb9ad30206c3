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
        defer_build=True,
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
    ip: IPv4 | None = Field(None, description="IPv4 address kubitect connects to over SSH; required when type "
                                             "is remote.")
    user: AlnumHypUs | None = Field(None, description="SSH user on the host (needs libvirt access); required when "
                                                     "type is remote.")
    ssh: HostSsh = Field(default_factory=HostSsh, description="SSH settings of a remote host: key file, port, "
                                                              "host-key verification.")

    @property
    def is_local(self) -> bool:
        return self.type in ("local", "localhost")


class DataResourcePool(Model):
    """An extra storage pool on the host; data disks refer to it by name."""

    name: AlnumHyp = Field(description="Pool name, unique per host (letters, digits and -); `main` is reserved.")
    path: NonEmpty = Field(DEFAULT_POOL_PATH, description="Absolute directory on the host; the pool lives in "
                                                          "<path>/<cluster>-<name>-data-resource-pool.")


class Host(Model):
    """A physical machine that runs cluster VMs."""

    name: AlnumHypUs = Field(description="Unique host name (letters, digits, - and _).")
    default: bool = Field(False, description="Instances that name no host run here; at most one host may set "
                                             "it, and without one the first host is the default.")
    connection: Connection = Field(description="How to reach the host (type: local or remote).")
    main_resource_pool_path: NonEmpty = Field(
        DEFAULT_POOL_PATH, description="Absolute directory on the host for base images and main disks; the pool "
                                       "lives in <path>/<cluster>-main-resource-pool.")
    data_resource_pools: list[DataResourcePool] = Field(
        default_factory=list, description="Extra storage pools on this host that data disks can name (`pool`).")
    provider: str | None = Field(None, description="VM provider serving this host (an installed plugin; "
                                                  "`kubitect list plugins`). Defaults to the installed "
                                                  "provider that declares itself the default.")


# ---------------------------------------------------------------- cluster.network
class Network(Model):
    """The network of the nodes: a libvirt NAT/routed network, or an existing bridge."""

    mode: Literal["nat", "route", "bridge"] = Field(
        "nat", description="nat or route: kubitect creates a libvirt network <cluster>-network (with DHCP) on "
                           "each host; bridge: nodes join an existing host bridge, the only mode that spans "
                           "several hosts.")
    cidr: CIDRv4 = Field(description="IPv4 network of the nodes in CIDR notation, e.g. 10.10.0.0/20.")
    gateway: IPv4 | None = Field(None, description="Defaults to the first host address of the CIDR.")
    bridge: IfName | None = Field(None, description="Existing host bridge; required in bridge mode.")


# ---------------------------------------------------------------- cluster.nodeTemplate
class Os(Model):
    """The node operating system image."""

    distro: Distro = Field("ubuntu22", description="Distribution preset: picks the cloud image (checked "
                                                   "against its published checksum) and the NIC name.")
    source: NonEmpty | None = Field(None, description="Image URL or local path; defaults per distro.")
    network_interface: IfName | None = Field(None, description="NIC inside the VM; defaults per distro.")


class NodeTemplateSsh(Model):
    """The SSH key pair used to reach the nodes."""

    private_key_path: NonEmpty | None = Field(
        None, description="Existing private key (with <path>.pub) for the nodes; else one is generated."
    )
    add_to_known_hosts: bool = Field(False, description="Write the nodes' (kubitect-generated) host keys into "
                                                        "~/.ssh/known_hosts; destroy removes exactly those lines.")


class NodeTemplate(Model):
    """Settings shared by every node VM."""

    user: AlnumHypUs = Field("k8s", description="User created on every node (key-only SSH, passwordless sudo).")
    os: Os = Field(default_factory=Os, description="The node image: distro preset, or your own source and NIC.")
    dns: list[IP] = Field(default_factory=list, description="DNS servers of the nodes; empty: the network's "
                                                            "gateway.")
    cpu_mode: Literal["custom", "host-model", "host-passthrough", "maximum"] = Field(
        "custom", description="libvirt CPU mode of the VMs; CentOS/Rocky 9 need x86-64-v2, so not custom there.")
    update_on_boot: bool = Field(True, description="Upgrade packages on first boot; the package index gets at "
                                                   "most 60 s, and a node without a mirror boots anyway (warned).")
    ssh: NodeTemplateSsh = Field(default_factory=NodeTemplateSsh, description="The node SSH key pair and "
                                                                              "known_hosts handling.")


# ---------------------------------------------------------------- cluster.nodes
class DataDisk(Model):
    """An extra raw disk for a node (e.g. for Rook), in the main or a data resource pool."""

    name: AlnumHyp = Field(description="Disk name, unique per instance.")
    pool: AlnumHyp = Field("main", description="`main`, or a dataResourcePools name of the instance's host.")
    size: Positive = Field(description="Size in GiB.")


class Resources(Model):
    """vCPUs, RAM and main disk size of a node; unset values come from `default`, then 2/4/32."""

    cpu: Positive | None = Field(None, description="Number of vCPUs; unset: the role default, else 2.")
    ram: Positive | None = Field(None, description="RAM in GiB; unset: the role default, else 4.")
    main_disk_size: Positive | None = Field(None, description="Main (system) disk in GiB; unset: the role "
                                                              "default, else 32.")


class LbDefault(Resources):
    """Defaults for every load balancer instance."""


class KubernetesNodeFields(Model):
    """What masters and workers carry beyond resources, at role default and instance level."""

    labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Kubernetes node labels; role defaults and instance labels are merged "
                                          "(the instance wins on a clash).")
    taints: list[Taint] = Field(default_factory=list, description="Kubernetes node taints KEY[=VALUE]:EFFECT; "
                                                                  "role defaults and instance taints are merged.")
    data_disks: list[DataDisk] = Field(default_factory=list, description="Extra raw disks (e.g. for Rook OSDs); "
                                                                         "role defaults come first.")


class NodeDefault(KubernetesNodeFields, Resources):
    """Defaults merged into every instance of the role (the instance wins on a clash)."""


class Instance(Resources):
    """One node VM; its name is <cluster>-<role>-<id>."""

    id: InstanceId = Field(description="Unique id within the role (letters, digits, - and _).")
    host: AlnumHypUs | None = Field(None, description="Host name; defaults to the default host.")
    ip: IPv4 | None = Field(None, description="Static IP inside the CIDR; DHCP when omitted (nat only).")
    mac: Mac | None = Field(None, description="Fixed MAC address of the NIC; generated when omitted.")


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
    target: Literal["workers", "masters", "all"] = Field(
        "workers", description="Nodes that receive the traffic; masters when the cluster has no workers.")


class LoadBalancerNodes(Model):
    """Load balancers in front of the control plane; several share a VIP through VRRP."""

    implementation: str | None = Field(
        None,
        description="Load balancer plugin serving the endpoint (kubitect extension; `kubitect list plugins`). "
                    "Defaults to the installed load balancer that declares itself the default.",
    )
    vip: IPv4 | None = Field(None, description="Virtual IP the load balancers share through VRRP: the API "
                                              "endpoint; required with more than one load balancer, inside "
                                              "the CIDR and used by no node.")
    virtual_router_id: Uint8 | None = Field(
        None, description="keepalived VRID; defaults to a stable hash of the cluster name (1-255)."
    )
    default: LbDefault = Field(default_factory=LbDefault, description="Resources every load balancer gets "
                                                                      "unless its instance sets them.")
    forward_ports: list[ForwardPort] = Field(default_factory=list, description="Extra ports HAProxy forwards "
                                                                               "to the nodes (6443 is always "
                                                                               "served).")
    instances: list[LbInstance] = Field(default_factory=list, description="The load balancer VMs (none: the "
                                                                          "single master is the endpoint).")


class RoleNodes(Model):
    """Masters or workers: defaults and instances."""

    default: NodeDefault = Field(default_factory=NodeDefault, description="Resources, labels, taints and data "
                                                                          "disks every instance of the role gets.")
    instances: list[NodeInstance] = Field(default_factory=list, description="The VMs of the role; masters: an "
                                                                            "odd number, at least one.")


class Nodes(Model):
    """The VMs of the cluster by role."""

    load_balancer: LoadBalancerNodes = Field(default_factory=LoadBalancerNodes, description="HAProxy + "
                                             "keepalived VMs in front of the control plane, sharing the VIP.")
    master: RoleNodes = Field(default_factory=RoleNodes, description="Control-plane nodes (etcd runs on them).")
    worker: RoleNodes = Field(default_factory=RoleNodes, description="Worker nodes; without any, the masters "
                                                                     "run workloads.")


class Cluster(Model):
    """The cluster: its name, network, node template and nodes."""

    name: AlnumHyp = Field(description="Cluster name (letters, digits and -); prefixes every resource.")
    network: Network = Field(description="The node network (mode, cidr, gateway, bridge).")
    node_template: NodeTemplate = Field(default_factory=NodeTemplate, description="Settings shared by every "
                                                                                  "node: user, OS, DNS, SSH.")
    nodes: Nodes = Field(default_factory=Nodes, description="The node VMs by role: loadBalancer, master, worker.")


# ---------------------------------------------------------------- kubernetes, addons
class KubernetesOther(Model):
    """Extra Kubernetes options."""

    auto_renew_certificates: bool = Field(False, description="A systemd timer on every control plane renews "
                                                             "its certificates monthly.")
    merge_kubeconfig: bool = Field(False, description="Add the cluster to ~/.kube/config (or $KUBECONFIG); "
                                                      "destroy removes exactly the entries it added.")


class Kubernetes(Model):
    """What Kubernetes to install and how."""

    version: KubeVersion | None = Field(None, description="vMAJOR.MINOR.PATCH within the installer's range; unset: "
                                                            "kubitect's default (`kubitect validate` shows it).")
    manager: str | None = Field(None, description="Installer plugin name (`kubitect list plugins`); defaults to "
                                                 "the installed installer that declares itself the default.")
    network_plugin: Literal["calico", "cilium", "flannel", "kube-router"] = Field(
        "calico", description="CNI plugin; k3s keeps its built-in flannel unless one is named here.")
    dns_mode: Literal["coredns"] = Field("coredns", description="Cluster DNS; only coredns.")
    other: KubernetesOther = Field(default_factory=KubernetesOther, description="Certificate renewal and "
                                                                                "kubeconfig merging.")


class Rook(Model):
    """The Rook/Ceph storage addon."""

    enabled: bool = Field(False, description="Install Rook/Ceph after Kubernetes, with OSDs on the data disks "
                                             "of the selected nodes.")
    version: StrictVersion | None = Field(None, description="Rook release; only releases kubitect pins "
                                                            "manifests for (unset: v1.20.6).")
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="Labels a candidate node (the workers, else the masters) must "
                                          "carry to host Ceph; empty: all candidates.")


class Addons(Model):
    """Optional addons."""

    kubespray: dict[str, Any] | None = Field(None, description="Kept for compatibility; not applied.")
    rook: Rook = Field(default_factory=Rook, description="Rook/Ceph storage on the nodes' data disks.")


class Config(Model):
    """A whole Kubitect config file."""

    hosts: list[Host] = Field(description="The physical hosts (at least one).")
    cluster: Cluster = Field(description="The cluster: name, network, nodeTemplate, nodes.")
    kubernetes: Kubernetes = Field(default_factory=Kubernetes, description="Kubernetes version, installer, "
                                                                           "CNI and options.")
    addons: Addons = Field(default_factory=Addons, description="Optional addons (Rook).")

    def host(self, name: str) -> Host | None:
        """The host named `name`, or None."""
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def default_host(self) -> Host:
        """The host that runs instances which name none: `default: true`, else the first."""
        return next((h for h in self.hosts if h.default), self.hosts[0])
