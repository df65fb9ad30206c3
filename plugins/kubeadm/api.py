"""Strict models of the upstream kubeadm configuration API (the subset kubitect renders).

Field names follow the kubeadm reference (kubeadm.k8s.io/v1beta3 and v1beta4,
kubelet.config.k8s.io/v1beta1). Every model forbids unknown keys, so a typo in the template,
or a v1beta3-only field rendered into a v1beta4 document, fails here (in the golden tests and
before a config is sent to a node) instead of in `kubeadm init` on the first master.

The visible differences between the two versions that matter here: `extraArgs` and
`kubeletExtraArgs` are maps in v1beta3 and lists of {name, value} in v1beta4; v1beta4 moved the
discovery `timeout` into a `timeouts` block.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

V1BETA3 = "kubeadm.k8s.io/v1beta3"
V1BETA4 = "kubeadm.k8s.io/v1beta4"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Arg(Strict):
    """v1beta4 argument (extraArgs, kubeletExtraArgs entries)."""

    name: str
    value: str


class TaintSpec(Strict):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    timeAdded: str | None = None


class BootstrapToken(Strict):
    token: str = Field(pattern=r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
    description: str | None = None
    ttl: str | None = None
    expires: str | None = None
    usages: list[str] | None = None
    groups: list[str] | None = None


class APIEndpoint(Strict):
    advertiseAddress: str | None = None
    bindPort: int | None = None


class NodeRegistrationV1beta3(Strict):
    name: str | None = None
    criSocket: str | None = None
    taints: list[TaintSpec] | None = None
    kubeletExtraArgs: dict[str, str] | None = None
    ignorePreflightErrors: list[str] | None = None
    imagePullPolicy: Literal["Always", "Never", "IfNotPresent"] | None = None


class NodeRegistrationV1beta4(NodeRegistrationV1beta3):
    kubeletExtraArgs: list[Arg] | None = None  # type: ignore[assignment]
    imagePullSerial: bool | None = None


class Networking(Strict):
    serviceSubnet: str | None = None
    podSubnet: str | None = None
    dnsDomain: str | None = None


class APIServerV1beta3(Strict):
    certSANs: list[str] | None = None
    extraArgs: dict[str, str] | None = None
    timeoutForControlPlane: str | None = None


class APIServerV1beta4(Strict):
    certSANs: list[str] | None = None
    extraArgs: list[Arg] | None = None


class BootstrapTokenDiscovery(Strict):
    token: str = Field(pattern=r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
    apiServerEndpoint: str | None = None
    caCertHashes: list[str] | None = None
    unsafeSkipCAVerification: bool | None = None


class DiscoveryV1beta3(Strict):
    bootstrapToken: BootstrapTokenDiscovery | None = None
    tlsBootstrapToken: str | None = None
    timeout: str | None = None


class DiscoveryV1beta4(Strict):
    bootstrapToken: BootstrapTokenDiscovery | None = None
    tlsBootstrapToken: str | None = None


class JoinControlPlane(Strict):
    localAPIEndpoint: APIEndpoint | None = None
    certificateKey: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class _Init(Strict):
    kind: Literal["InitConfiguration"]
    bootstrapTokens: list[BootstrapToken] | None = None
    localAPIEndpoint: APIEndpoint | None = None
    certificateKey: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    skipPhases: list[str] | None = None


class InitConfigurationV1beta3(_Init):
    apiVersion: Literal["kubeadm.k8s.io/v1beta3"]
    nodeRegistration: NodeRegistrationV1beta3 | None = None


class InitConfigurationV1beta4(_Init):
    apiVersion: Literal["kubeadm.k8s.io/v1beta4"]
    nodeRegistration: NodeRegistrationV1beta4 | None = None


class _Cluster(Strict):
    kind: Literal["ClusterConfiguration"]
    clusterName: str | None = None
    kubernetesVersion: str | None = Field(None, pattern=r"^v\d+\.\d+\.\d+$")
    controlPlaneEndpoint: str | None = None
    networking: Networking | None = None
    certificatesDir: str | None = None
    imageRepository: str | None = None


class ClusterConfigurationV1beta3(_Cluster):
    apiVersion: Literal["kubeadm.k8s.io/v1beta3"]
    apiServer: APIServerV1beta3 | None = None


class ClusterConfigurationV1beta4(_Cluster):
    apiVersion: Literal["kubeadm.k8s.io/v1beta4"]
    apiServer: APIServerV1beta4 | None = None


class JoinConfigurationV1beta3(Strict):
    apiVersion: Literal["kubeadm.k8s.io/v1beta3"]
    kind: Literal["JoinConfiguration"]
    nodeRegistration: NodeRegistrationV1beta3 | None = None
    caCertPath: str | None = None
    discovery: DiscoveryV1beta3
    controlPlane: JoinControlPlane | None = None
    skipPhases: list[str] | None = None


class JoinConfigurationV1beta4(Strict):
    apiVersion: Literal["kubeadm.k8s.io/v1beta4"]
    kind: Literal["JoinConfiguration"]
    nodeRegistration: NodeRegistrationV1beta4 | None = None
    caCertPath: str | None = None
    discovery: DiscoveryV1beta4
    controlPlane: JoinControlPlane | None = None
    skipPhases: list[str] | None = None


class KubeletConfiguration(Strict):
    apiVersion: Literal["kubelet.config.k8s.io/v1beta1"]
    kind: Literal["KubeletConfiguration"]
    cgroupDriver: Literal["systemd", "cgroupfs"] | None = None


MODELS: dict[tuple[str, str], type[Strict]] = {
    (V1BETA3, "InitConfiguration"): InitConfigurationV1beta3,
    (V1BETA4, "InitConfiguration"): InitConfigurationV1beta4,
    (V1BETA3, "ClusterConfiguration"): ClusterConfigurationV1beta3,
    (V1BETA4, "ClusterConfiguration"): ClusterConfigurationV1beta4,
    (V1BETA3, "JoinConfiguration"): JoinConfigurationV1beta3,
    (V1BETA4, "JoinConfiguration"): JoinConfigurationV1beta4,
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"): KubeletConfiguration,
}


class InvalidKubeadmConfig(ValueError):
    """A rendered document does not match the upstream API (a kubitect bug, not a user error)."""


def validate_documents(text: str) -> list[Strict]:
    """Parses a multi-document kubeadm config and validates each document strictly."""
    out = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        model = MODELS.get(key)  # type: ignore[arg-type]
        if model is None:
            raise InvalidKubeadmConfig(f"unknown kubeadm document {key}")
        try:
            out.append(model.model_validate(doc))
        except ValueError as exc:
            raise InvalidKubeadmConfig(f"{key[1]} ({key[0]}) does not match the upstream API: {exc}") from None
    return out
