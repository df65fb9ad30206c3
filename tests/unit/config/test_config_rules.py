"""One invalid config per rule: each must fail with the right dot path, message and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cfgedit import del_path, get_path, set_path

from kubitect_core.config import ConfigError

S = set_path
M = "cluster.nodes.master.instances"
W = "cluster.nodes.worker.instances"
LB = "cluster.nodes.loadBalancer"


def _append(path, item):
    return lambda d: get_path(d, path).append(item)


def _all(*edits):
    def run(d):
        for edit in edits:
            edit(d)
    return run


def _set(path, value):
    return lambda d: S(d, path, value)


def _del(path):
    return lambda d: del_path(d, path)


def _masters(n):
    def run(d):
        d["cluster"]["nodes"]["master"]["instances"] = [
            {"id": i + 1, "ip": f"10.10.13.{10 + i}", "host": "host3"} for i in range(n)]
    return run


# (id, edit, expected path, message fragment, text expected on the reported line)
CASES = [
    ("unknown-top-key", _set("cluser", {"name": "x"}), "cluser", "did you mean `cluster`?", "cluser:"),
    ("unknown-nested-key", _set("cluster.nodeTemplate.os.networkinterface", "eth0"),
     "cluster.nodeTemplate.os.networkinterface", "did you mean `networkInterface`?", "networkinterface:"),
    ("snake-case-key", _set("hosts[2].data_resource_pools", []), "hosts[2].data_resource_pools",
     "did you mean `dataResourcePools`?", "data_resource_pools:"),
    ("hosts-empty", _set("hosts", []), "hosts", "at least one host", "hosts:"),
    ("hosts-missing", _del("hosts"), "hosts", "is required", None),
    ("hosts-not-a-list", _set("hosts", {"name": "a"}), "hosts", "must be a list", "hosts:"),
    ("host-name-duplicate", _set("hosts[1].name", "host1"), "hosts[1].name",
     "host name 'host1' is already used by hosts[0]", "name: host1"),
    ("host-name-chars", _set("hosts[0].name", "host 1"), "hosts[0].name", "letters, digits, '-' and '_'",
     "name: host 1"),
    ("two-default-hosts", _all(_set("hosts[0].default", True), _set("hosts[1].default", True)),
     "hosts[1].default", "only one host can be the default", "default: true"),
    ("connection-type-enum", _set("hosts[0].connection.type", "lokal"), "hosts[0].connection.type",
     "must be one of the following values: [local|localhost|remote] (actual: lokal)", "type: lokal"),
    ("remote-needs-ip", _del("hosts[0].connection.ip"), "hosts[0].connection.ip",
     "is required when connection.type is 'remote'", "connection:"),
    ("remote-needs-user", _del("hosts[1].connection.user"), "hosts[1].connection.user",
     "is required when connection.type is 'remote'", "connection:"),
    ("host-ip-format", _set("hosts[0].connection.ip", "10.10.0.300"), "hosts[0].connection.ip",
     "must be a valid IPv4 address", "ip: 10.10.0.300"),
    ("ssh-port-range", _set("hosts[0].connection.ssh.port", 70000), "hosts[0].connection.ssh.port",
     "must be at most 65535 (actual: 70000)", "port: 70000"),
    ("pool-name-duplicate", _append("hosts[2].dataResourcePools", {"name": "data-pool", "path": "/x"}),
     "hosts[2].dataResourcePools[1].name", "pool name 'data-pool' is already used", "name: data-pool"),
    ("pool-name-main-reserved", _set("hosts[2].dataResourcePools[0].name", "main"),
     "hosts[2].dataResourcePools[0].name", "reserved for the host's main resource pool", "name: main"),
    ("provider-unknown", _set("hosts[0].provider", "proxmox"), "hosts[0].provider",
     "unknown VM provider 'proxmox'; installed providers: [libvirt|nspawn]", "provider: proxmox"),
    ("lb-implementation-unknown", _set("cluster.nodes.loadBalancer.implementation", "kube-vip"),
     "cluster.nodes.loadBalancer.implementation",
     "unknown load balancer implementation 'kube-vip'; installed: [control-plane-vip|keepalived-haproxy]",
     "implementation: kube-vip"),
    ("cluster-name-missing", _del("cluster.name"), "cluster.name", "is required", "cluster:"),
    ("cluster-name-chars", _set("cluster.name", "kubitect_ha"), "cluster.name",
     "only letters, digits and '-'", "name: kubitect_ha"),
    ("cluster-name-local-prefix", _set("cluster.name", "local-ha"), "cluster.name",
     "reserved for clusters created with --local", "name: local-ha"),
    ("network-mode-enum", _set("cluster.network.mode", "bridged"), "cluster.network.mode",
     "[nat|route|bridge] (actual: bridged)", "mode: bridged"),
    ("cidr-format", _set("cluster.network.cidr", "10.10.0.0"), "cluster.network.cidr",
     "CIDR notation", "cidr: 10.10.0.0"),
    ("cidr-too-small", _set("cluster.network.cidr", "10.10.13.200/31"), "cluster.network.cidr",
     "leaves no room for a gateway and nodes", "cidr: 10.10.13.200/31"),
    ("bridge-required", _del("cluster.network.bridge"), "cluster.network.bridge",
     "is required when cluster.network.mode is 'bridge'", "network:"),
    ("bridge-name-too-long", _set("cluster.network.bridge", "br-averylongname"), "cluster.network.bridge",
     "1-15 characters", "bridge: br-averylongname"),
    ("bridge-name-slash", _set("cluster.network.bridge", "br/0"), "cluster.network.bridge",
     "without '/'", "bridge: br/0"),
    ("gateway-outside-cidr", _set("cluster.network.gateway", "10.20.0.1"), "cluster.network.gateway",
     "inside cluster.network.cidr 10.10.0.0/20 (actual: 10.20.0.1)", "gateway: 10.20.0.1"),
    ("gateway-network-address", _set("cluster.network.gateway", "10.10.0.0"), "cluster.network.gateway",
     "must not be the network address", "gateway: 10.10.0.0"),
    ("distro-enum", _set("cluster.nodeTemplate.os.distro", "ubuntu18"), "cluster.nodeTemplate.os.distro",
     "ubuntu22|", "distro: ubuntu18"),
    ("nic-name-space", _set("cluster.nodeTemplate.os.networkInterface", "eth 0"),
     "cluster.nodeTemplate.os.networkInterface", "Linux interface name", "networkInterface: eth 0"),
    ("dns-format", _set("cluster.nodeTemplate.dns", ["1.1.1.1", "dns.example"]), "cluster.nodeTemplate.dns[1]",
     "IPv4 or IPv6 address (actual: dns.example)", "dns.example"),
    ("cpu-mode-enum", _set("cluster.nodeTemplate.cpuMode", "host"), "cluster.nodeTemplate.cpuMode",
     "[custom|host-model|host-passthrough|maximum]", "cpuMode: host"),
    ("update-on-boot-bool", _set("cluster.nodeTemplate.updateOnBoot", "maybe"),
     "cluster.nodeTemplate.updateOnBoot", "must be true or false", "updateOnBoot: maybe"),
    ("private-key-is-pub", _set("cluster.nodeTemplate.ssh.privateKeyPath", "~/.ssh/id_rsa.pub"),
     "cluster.nodeTemplate.ssh.privateKeyPath", "not the public one", "privateKeyPath:"),
    ("private-key-empty", _set("cluster.nodeTemplate.ssh.privateKeyPath", " "),
     "cluster.nodeTemplate.ssh.privateKeyPath", "must not be empty", "privateKeyPath:"),
    ("masters-even", _masters(2), M, "must be odd (1, 3, 5, ...)", "instances:"),
    ("masters-none", _masters(0), M, "at least one master instance", "instances:"),
    ("masters-need-lb", _del(f"{LB}"), "cluster.nodes.loadBalancer.instances",
     "at least one load balancer instance is required", "nodes:"),
    ("lbs-need-vip", _del(f"{LB}.vip"), f"{LB}.vip", "virtual IP (VIP) is required", "loadBalancer:"),
    ("vip-outside-cidr", _set(f"{LB}.vip", "10.10.16.1"), f"{LB}.vip",
     "inside cluster.network.cidr 10.10.0.0/20 (actual: 10.10.16.1)", "vip: 10.10.16.1"),
    ("vip-network-address", _set(f"{LB}.vip", "10.10.0.0"), f"{LB}.vip", "network address", "vip: 10.10.0.0"),
    ("vip-broadcast-address", _set(f"{LB}.vip", "10.10.15.255"), f"{LB}.vip", "broadcast address",
     "vip: 10.10.15.255"),
    ("vip-is-gateway", _set(f"{LB}.vip", "10.10.0.1"), f"{LB}.vip", "gateway address 10.10.0.1",
     "vip: 10.10.0.1"),
    ("vip-clashes-node-ip", _set(f"{LB}.vip", "10.10.13.21"), f"{LB}.vip",
     f"also the IP of {W}[1]", "vip: 10.10.13.21"),
    ("node-ip-outside-cidr", _set(f"{M}[1].ip", "10.11.13.11"), f"{M}[1].ip",
     "inside cluster.network.cidr", "ip: 10.11.13.11"),
    ("node-ip-format", _set(f"{W}[2].ip", "10.10.13"), f"{W}[2].ip", "valid IPv4 address", "ip: 10.10.13"),
    ("node-ip-duplicate", _set(f"{W}[0].ip", "10.10.13.10"), f"{W}[0].ip",
     f"IP address '10.10.13.10' is already used by {M}[0]", "ip: 10.10.13.10"),
    ("mac-duplicate", _all(_set(f"{M}[0].mac", "52:54:00:aa:bb:cc"), _set(f"{W}[0].mac", "52:54:00:AA:BB:CC")),
     f"{W}[0].mac", "MAC address '52:54:00:AA:BB:CC' is already used", "mac: 52:54:00:AA:BB:CC"),
    ("mac-format", _set(f"{M}[0].mac", "52:54:00:aa:bb"), f"{M}[0].mac", "must be a MAC address", "mac:"),
    ("worker-id-duplicate", _set(f"{W}[2].id", 2), f"{W}[2].id", "id '2' is already used by", "id: 2"),
    ("instance-id-chars", _set(f"{W}[2].id", "w 3"), f"{W}[2].id", "letters, digits, '-' and '_'", "id: w 3"),
    ("host-reference", _set(f"{M}[2].host", "host9"), f"{M}[2].host",
     "one of the configured hosts: [host1|host2|host3|host4|host5] (actual: host9)", "host: host9"),
    ("pool-not-on-host", _set(f"{W}[0].dataDisks[0].pool", "fast-pool"), f"{W}[0].dataDisks[0].pool",
     "must be 'main' or one of the pools of host 'host3': [main|data-pool] (actual: fast-pool)",
     "pool: fast-pool"),
    ("pool-host-has-none", _set(f"{W}[0].host", "host1"), f"{W}[0].dataDisks[0].pool",
     "host 'host1' has no dataResourcePools", "pool: data-pool"),
    ("data-disk-duplicate", _append(f"{W}[1].dataDisks", {"name": "rook", "size": 10}),
     f"{W}[1].dataDisks[1].name", "data disk name 'rook' is already used", "name: rook"),
    ("data-disk-size", _set(f"{W}[1].dataDisks[0].size", 0), f"{W}[1].dataDisks[0].size",
     "must be at least 1 (actual: 0)", "size: 0"),
    ("data-disk-clashes-default", _set("cluster.nodes.worker.default", {"dataDisks": [{"name": "rook", "size": 5}]}),
     f"{W}[0].dataDisks[0].name", "already defined in cluster.nodes.worker.default.dataDisks", "name: rook"),
    ("forward-port-name-duplicate", _set(f"{LB}.forwardPorts", [{"name": "http", "port": 80},
                                                                 {"name": "http", "port": 8080}]),
     f"{LB}.forwardPorts[1].name", "forward port name 'http' is already used", "name: http"),
    ("forward-port-duplicate", _set(f"{LB}.forwardPorts", [{"name": "http", "port": 80},
                                                            {"name": "web", "port": 80}]),
     f"{LB}.forwardPorts[1].port", "port '80' is already used", "port: 80"),
    ("forward-port-6443", _set(f"{LB}.forwardPorts", [{"name": "api", "port": 6443}]),
     f"{LB}.forwardPorts[0].port", "port 6443 cannot be forwarded", "port: 6443"),
    ("forward-port-target-enum", _set(f"{LB}.forwardPorts", [{"name": "web", "port": 80, "target": "nodes"}]),
     f"{LB}.forwardPorts[0].target", "[workers|masters|all] (actual: nodes)", "target: nodes"),
    ("vrid-range", _set(f"{LB}.virtualRouterId", 256), f"{LB}.virtualRouterId", "at most 255",
     "virtualRouterId: 256"),
    ("priority-range", _set(f"{LB}.instances[0].priority", -1), f"{LB}.instances[0].priority",
     "at least 0 (actual: -1)", "priority: -1"),
    ("cpu-positive", _set(f"{M}[0].cpu", 0), f"{M}[0].cpu", "at least 1", "cpu: 0"),
    ("ram-whole-number", _set("cluster.nodes.worker.default", {"ram": 2.5}), "cluster.nodes.worker.default.ram",
     "whole number", "ram: 2.5"),
    ("node-name-too-long", _set(f"{W}[2].id", "w" * 60), f"{W}[2].id", "longer than 63 characters", "id: www"),
    ("labels-value-type", _set(f"{W}[0].labels", {"zone": ["a"]}), f"{W}[0].labels.zone", "must be a string",
     "zone:"),
    ("taint-format", _set(f"{W}[0].taints", ["a:NoSchedule", "gpu"]), f"{W}[0].taints[1]",
     "must be a taint KEY[=VALUE]:EFFECT", "- gpu"),
    ("instances-not-list", _set("cluster.nodes.worker.instances", "three"), W, "must be a list",
     "instances: three"),
    ("version-format-short", _set("kubernetes.version", "v1.2"), "kubernetes.version",
     "must be a Kubernetes version such as", "version: v1.2"),
    ("version-latest", _set("kubernetes.version", "latest"), "kubernetes.version", "(actual: latest)",
     "version: latest"),
    ("version-above-range", _set("kubernetes.version", "1.99.0"), "kubernetes.version",
     "v1.99.0 is not supported by installer 'kubeadm'; supported: v1.28.0 - v1.35.99", "version: 1.99.0"),
    ("version-below-range", _set("kubernetes.version", "v1.27.16"), "kubernetes.version",
     "is not supported", "version: v1.27.16"),
    # `version: 1.28` is the text "1.28" to Kubitect's typed decoder, not a float: a version-format error.
    ("version-float", _set("kubernetes.version", 1.28), "kubernetes.version",
     "must be a Kubernetes version such as v1.34.2 (vMAJOR.MINOR.PATCH) (actual: 1.28)", "version: 1.28"),
    ("manager-unknown", _set("kubernetes.manager", "rke2"), "kubernetes.manager",
     "installed installers: [k3s|kubeadm]", "manager: rke2"),
    ("network-plugin-enum", _set("kubernetes.networkPlugin", "weave"), "kubernetes.networkPlugin",
     "[calico|cilium|flannel|kube-router] (actual: weave)", "networkPlugin: weave"),
    ("dns-mode-enum", _set("kubernetes.dnsMode", "kubedns"), "kubernetes.dnsMode", "[coredns]", "dnsMode: kubedns"),
    ("other-unknown-key", _set("kubernetes.other", {"mergeKubeConfig": True}), "kubernetes.other.mergeKubeConfig",
     "did you mean `mergeKubeconfig`?", "mergeKubeConfig:"),
    ("rook-version", _set("addons", {"rook": {"enabled": True, "version": "master"}}), "addons.rook.version",
     "must be a version such as", "version: master"),
    ("rook-no-disks", _all(*[_del(f"{W}[{i}].dataDisks") for i in range(3)], _set("addons.rook.enabled", True)),
     "addons.rook.enabled", "but none of the workers has dataDisks (worker ids: 1, 2, 3)", "enabled: true"),
    ("rook-selector-matches-none", _set("addons.rook", {"enabled": True, "nodeSelector": {"storage": "ceph"}}),
     "addons.rook.enabled", "no worker matches nodeSelector {storage: ceph}", "enabled: true"),
    ("rook-selected-without-disks", _all(_set(f"{W}[0].labels", {"rook": True}), _del(f"{W}[0].dataDisks"),
                                         _set("addons.rook", {"enabled": True, "nodeSelector": {"rook": True}})),
     "addons.rook.enabled", "none of the workers matching nodeSelector {rook: true} has dataDisks (worker ids: 1)",
     "enabled: true"),
    ("addons-kubespray-type", _set("addons", {"kubespray": ["a"]}), "addons.kubespray", "must be a mapping",
     "kubespray:"),
]


def test_at_least_forty_rules():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_config(case, seed, tmp_path: Path):
    _id, edit, path, fragment, line_has = case
    edit(seed)
    text = yaml.safe_dump(seed, sort_keys=False)
    file = tmp_path / "cluster.yaml"
    file.write_text(text)
    from kubitect_core.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(file)
    by_path = [i for i in info.value.issues if i.path == path]
    assert by_path, f"no issue at {path}; got: {info.value}"
    issue = next((i for i in by_path if fragment in i.message), None)
    assert issue is not None, f"no message with {fragment!r} at {path}: {[i.message for i in by_path]}"
    assert issue.severity == "error"
    assert issue.file == str(file)
    assert issue.column and issue.column >= 1
    if line_has is not None:
        assert issue.line is not None
        assert line_has in text.splitlines()[issue.line - 1], (issue, text.splitlines()[issue.line - 1])
    assert path in str(info.value) and fragment in str(info.value)


def test_taint_format(seed, load_data):
    set_path = S
    set_path(seed, f"{W}[0].taints", ["dedicated=gpu:NoSchedule", "special:PreferNoSchedule", "x=:NoExecute"])
    assert load_data(seed).topology.workers[0].taints[0] == "dedicated=gpu:NoSchedule"
    set_path(seed, f"{W}[0].taints", ["dedicated=gpu"])
    with pytest.raises(ConfigError, match=r"\[NoSchedule\|PreferNoSchedule\|NoExecute\]"):
        load_data(seed)


def test_bad_labels_are_rejected_at_validate(seed, load_data):
    """Kubernetes refuses them when the node registers, late in apply: validate refuses them first."""
    S(seed, f"{W}[0].labels", {"custom": "has spaces", "ok": "fine", "bad key!": "x", "empty": ""})
    with pytest.raises(ConfigError) as info:
        load_data(seed)
    errors = {i.path: i.message for i in info.value.issues}
    assert "not a valid Kubernetes label value" in errors[f"{W}[0].labels.custom"]
    assert "not a valid Kubernetes label key" in errors[f"{W}[0].labels.bad key!"]
    assert f"{W}[0].labels.ok" not in errors and f"{W}[0].labels.empty" not in errors
    assert all(i.severity == "error" for i in info.value.issues)


def test_rook_on_nodes_with_disks_is_valid(seed, load_data):
    """The seed's workers carry `rook` disks: enabling Rook is valid, also narrowed by a selector
    whose value is empty (key present, any value) on a label that comes from the role default."""
    S(seed, "addons.rook.enabled", True)
    assert load_data(seed).config.addons.rook.enabled
    S(seed, "cluster.nodes.worker.default.labels", {"storage": "x"})
    S(seed, "addons.rook.nodeSelector", {"storage": ""})
    assert load_data(seed).config.addons.rook.node_selector == {"storage": ""}
