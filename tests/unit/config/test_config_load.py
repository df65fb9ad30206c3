"""Loading, defaults, topology and the error report of whole config files."""

from __future__ import annotations

import copy
import subprocess
import sys
import zlib

import pytest
import yaml
from cfgedit import SEED, set_path
from pydantic import BaseModel, ConfigDict

from kubitect_core.config import (
    Config,
    ConfigError,
    InstallerInfo,
    ValidationContext,
    default_context,
    load_config,
    resolve_topology,
    validate_raw,
)
from kubitect_core.contracts import ConfigExtension
from kubitect_core.defaults import DefaultChoice


def test_seed_loads_with_the_expected_topology():
    loaded = load_config(SEED)
    topo = loaded.topology
    assert [n.name for n in topo.load_balancers] == ["kubitect-ha-lb-1", "kubitect-ha-lb-2"]
    assert [n.host for n in topo.masters] == ["host3", "host4", "host5"]
    assert [n.ip for n in topo.workers] == ["10.10.13.20", "10.10.13.21", "10.10.13.22"]
    assert topo.vip == topo.endpoint == "10.10.13.200"
    assert topo.virtual_router_id == zlib.crc32(b"kubitect-ha") % 255 + 1
    assert all(n.data_disks[0].pool == "data-pool" and n.data_disks[0].size_gib == 512 for n in topo.workers)
    assert {(n.cpu, n.ram_gib, n.main_disk_gib) for n in topo.nodes} == {(2, 4, 32)}
    assert [n.priority for n in topo.load_balancers] == [10, 10]
    assert loaded.source == SEED
    assert loaded.raw["kubernetes"] == {"version": "v1.28.6"}  # raw stays as written


def test_seed_v1_28_6_is_accepted_with_an_end_of_life_warning():
    loaded = load_config(SEED)
    [warning] = loaded.warnings
    assert warning.path == "kubernetes.version" and warning.severity == "warning"
    assert "end of life" in warning.message and warning.line == SEED.read_text().splitlines().index(
        "  version: v1.28.6") + 1


def test_resolved_defaults_are_filled(seed):
    cfg = load_config(SEED).config
    assert cfg.hosts[0].default is True and cfg.default_host.name == "host1"
    assert cfg.hosts[1].connection.ssh.port == 22 and cfg.hosts[1].main_resource_pool_path == "/var/lib/libvirt/images/"
    assert cfg.cluster.network.gateway == "10.10.0.1"
    os_ = cfg.cluster.node_template.os
    assert os_.network_interface == "ens3" and "jammy" in os_.source
    assert cfg.cluster.node_template.cpu_mode == "custom" and cfg.cluster.node_template.update_on_boot is True
    assert cfg.kubernetes.manager == "kubeadm" and cfg.kubernetes.network_plugin == "calico"
    assert cfg.kubernetes.dns_mode == "coredns"
    assert cfg.cluster.nodes.load_balancer.virtual_router_id == zlib.crc32(b"kubitect-ha") % 255 + 1
    assert cfg.cluster.nodes.worker.instances[0].data_disks[0].pool == "data-pool"
    assert cfg.cluster.nodes.master.instances[0].cpu == 2


def test_distro_preset_drives_source_and_nic(seed, load_data):
    set_path(seed, "cluster.nodeTemplate.os.distro", "rocky9")
    os_ = load_data(seed).config.cluster.node_template.os
    assert os_.network_interface == "eth0" and "Rocky-9" in os_.source
    set_path(seed, "cluster.nodeTemplate.os.networkInterface", "enp1s0.40")
    set_path(seed, "cluster.nodeTemplate.os.source", "~/images/rocky.qcow2")
    os_ = load_data(seed).config.cluster.node_template.os
    assert (os_.network_interface, os_.source) == ("enp1s0.40", "~/images/rocky.qcow2")


def test_dump_exclude_unset_gives_back_what_was_written():
    loaded = load_config(SEED)
    dumped = loaded.config.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)
    assert "gateway" not in dumped["cluster"]["network"]
    assert "manager" not in dumped["kubernetes"] and "default" not in dumped["hosts"][0]
    again = validate_raw(dumped)
    assert again.config == loaded.config
    full = loaded.config.model_dump(by_alias=True)
    assert full["cluster"]["network"]["gateway"] == "10.10.0.1"
    assert Config.model_validate(full) == loaded.config
    assert validate_raw(full).topology == loaded.topology


def test_vrid_is_stable_across_processes_and_differs_between_names():
    code = "from kubitect_core.config import default_virtual_router_id as f; print(f('kubitect-ha'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outs == {str(zlib.crc32(b"kubitect-ha") % 255 + 1)}
    from kubitect_core.config import default_virtual_router_id as vrid

    assert len({vrid(f"cluster-{i}") for i in range(20)}) > 15
    assert all(1 <= vrid(f"c{i}") <= 255 for i in range(300))


def test_labels_taints_and_data_disks_are_merged_from_defaults(seed, load_data):
    set_path(seed, "cluster.nodes.worker.default", {
        "labels": {"rook": False, "zone": "a"}, "taints": ["t=1:NoSchedule", "shared:NoExecute"],
        "dataDisks": [{"name": "logs", "size": 8}], "cpu": 6})
    set_path(seed, "cluster.nodes.worker.instances[0].labels", {"rook": True})
    set_path(seed, "cluster.nodes.worker.instances[0].taints", ["shared:NoExecute", "own:NoSchedule"])
    set_path(seed, "cluster.nodes.worker.instances[0].cpu", 3)
    w1, w2, _ = load_data(seed).topology.workers
    assert w1.labels == {"rook": "true", "zone": "a"} and w2.labels == {"rook": "false", "zone": "a"}
    assert w1.taints == ("t=1:NoSchedule", "shared:NoExecute", "own:NoSchedule")
    assert [d.name for d in w1.data_disks] == ["logs", "rook"] and w1.data_disks[0].pool == "main"
    assert (w1.cpu, w2.cpu) == (3, 6)


def test_default_host_explicit_and_instance_without_host(seed, load_data):
    set_path(seed, "hosts[3].default", True)
    del seed["cluster"]["nodes"]["master"]["instances"][0]["host"]
    loaded = load_data(seed)
    assert loaded.topology.masters[0].host == "host4"
    assert loaded.config.cluster.nodes.master.instances[0].host == "host4"
    assert loaded.config.hosts[0].default is False


@pytest.mark.parametrize("lbs,vip,expected", [
    (0, None, "10.10.13.10"), (1, None, "10.10.13.201"), (1, "10.10.13.200", "10.10.13.200"),
    (2, "10.10.13.200", "10.10.13.200")])
def test_endpoint_table(seed, load_data, lbs, vip, expected):
    lb = seed["cluster"]["nodes"]["loadBalancer"]
    lb["instances"] = lb["instances"][:lbs]
    if lbs == 0:
        seed["cluster"]["nodes"]["master"]["instances"] = seed["cluster"]["nodes"]["master"]["instances"][:1]
    lb.pop("vip")
    if vip:
        lb["vip"] = vip
    topo = load_data(seed).topology
    assert topo.endpoint == expected
    assert (topo.virtual_router_id is not None) == (vip is not None)


def test_every_error_is_reported_at_once(load_text):
    text = SEED.read_text().replace("type: remote\n      user: kubitect\n      ip: 10.10.0.5",
                                    "type: remot\n      user: kubitect\n      ip: 10.10.0.5")
    text = text.replace("ip: 10.10.13.11", "ip: 10.11.13.11").replace("bridge: br0", "bridge: br0/x")
    text = text.replace("version: v1.28.6", "version: latest").replace("host: host5", "host: host6", 1)
    with pytest.raises(ConfigError) as info:
        load_text(text)
    paths = {i.path for i in info.value.issues}
    assert {"hosts[0].connection.type", "cluster.nodes.master.instances[1].ip", "cluster.network.bridge",
            "kubernetes.version", "cluster.nodes.master.instances[2].host"} <= paths
    rendered = str(info.value)
    assert rendered.count("cluster.yaml:") == len(info.value.issues) >= 5


def test_duplicate_yaml_key_is_an_error(load_text):
    text = SEED.read_text().replace("  name: kubitect-ha\n", "  name: kubitect-ha\n  name: other\n")
    with pytest.raises(ConfigError) as info:
        load_text(text)
    [issue] = [i for i in info.value.issues if "duplicate key" in i.message]
    assert issue.path == "cluster.name" and text.splitlines()[issue.line - 1] == "  name: other"


@pytest.mark.parametrize("text,fragment", [
    ("", "is empty"), ("# only a comment\n", "is empty"), ("- a\n- b\n", "must be a mapping"),
    ("hosts: [\n", "not valid YAML"), ("a: 1\n---\nb: 2\n", "not valid YAML"), ("just text", "must be a mapping")])
def test_unusable_files(load_text, text, fragment):
    with pytest.raises(ConfigError) as info:
        load_text(text)
    assert fragment in str(info.value)


def test_missing_file_and_yaml_error_position(tmp_path, load_text):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_text("hosts:\n  - name: a\n    connection: {type: local\n")
    assert info.value.issues[0].line is not None


def test_validate_raw_locates_with_text_and_without(seed):
    set_path(seed, "cluster.network.cidr", "nope")
    text = yaml.safe_dump(seed, sort_keys=False)
    with pytest.raises(ConfigError) as with_text:
        validate_raw(seed, source="stored.yaml", text=text)
    issue = with_text.value.issues[0]
    assert issue.file == "stored.yaml" and "cidr: nope" in text.splitlines()[issue.line - 1]
    with pytest.raises(ConfigError) as without:
        validate_raw(seed)
    assert without.value.issues[0].line is None and without.value.issues[0].path == "cluster.network.cidr"


def test_validate_raw_does_not_change_its_input(seed):
    before = copy.deepcopy(seed)
    validate_raw(seed)
    assert seed == before


def test_kubespray_manager_and_addon_are_notices(seed, load_data):
    seed["kubernetes"]["manager"] = "kubespray"
    seed["addons"] = {"kubespray": {"ingress_nginx_enabled": True}}
    loaded = load_data(seed)
    assert loaded.config.kubernetes.manager == "kubeadm"
    assert len(loaded.notices) == 2
    assert any("served by the 'kubeadm' installer" in n for n in loaded.notices)
    assert any("addons.kubespray" in n and "not applied" in n for n in loaded.notices)
    assert loaded.config.addons.kubespray == {"ingress_nginx_enabled": True}


def test_version_without_v_and_default_version(seed, load_data):
    seed["kubernetes"] = {"version": "1.34.1"}
    assert load_data(seed).config.kubernetes.version == "v1.34.1"
    del seed["kubernetes"]
    loaded = load_data(seed)
    assert loaded.config.kubernetes.version.startswith("v1.3") and not loaded.warnings


def test_nat_across_hosts_warns(seed, load_data):
    seed["cluster"]["network"] = {"mode": "nat", "cidr": "10.10.0.0/20"}
    loaded = load_data(seed)
    assert any(w.path == "cluster.network.mode" and "isolated" in w.message for w in loaded.warnings)


def test_third_party_context(seed, load_data):
    """Only third-party plugins installed: their names, version ranges and defaults decide."""
    ctx = ValidationContext(installers={"rke2": InstallerInfo(("1.30.0", "1.31.99"), "1.31.0")},
                            providers=["proxmox"], load_balancers=["kube-vip"],
                            defaults={"load_balancer": DefaultChoice("load balancer", ("kube-vip",))})
    seed["kubernetes"] = {"version": "v1.30.4", "manager": "rke2"}
    for host in seed["hosts"]:
        host["provider"] = "proxmox"
    loaded = load_data(seed, context=ctx)
    assert loaded.config.hosts[0].provider == "proxmox"
    assert loaded.config.cluster.nodes.load_balancer.implementation == "kube-vip"  # the installed default
    assert [w.path for w in loaded.warnings] == ["kubernetes.version"]
    seed["kubernetes"]["version"] = "v1.32.0"
    with pytest.raises(ConfigError, match=r"v1.30.0 - v1.31.99"):
        load_data(seed, context=ctx)
    with pytest.raises(ConfigError, match=r"installed providers: \[libvirt\|nspawn\]"):
        load_data(seed, context=default_context())


class Vrrp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    advertInt: int = 1  # noqa: N815 - the YAML key
    unicast: bool = False


EXT = ConfigExtension(path="cluster.nodes.loadBalancer", key="vrrp", model=Vrrp, plugin="keepalived-haproxy")


def test_extension_defaults_when_absent(seed, load_data):
    loaded = load_data(seed, context=ValidationContext(**{**default_context().__dict__, "extensions": [EXT]}))
    assert loaded.extensions["cluster.nodes.loadBalancer.vrrp"] == Vrrp()


def test_extension_value_validated_and_located(seed, load_data, load_text):
    ctx = ValidationContext(**{**default_context().__dict__, "extensions": [EXT]})  # EXT instead of the plugin's
    seed["cluster"]["nodes"]["loadBalancer"]["vrrp"] = {"advertInt": 3, "unicast": True}
    loaded = load_data(seed, context=ctx)
    assert loaded.extensions["cluster.nodes.loadBalancer.vrrp"] == Vrrp(advertInt=3, unicast=True)
    assert "vrrp" in loaded.raw["cluster"]["nodes"]["loadBalancer"]  # raw kept as written
    seed["cluster"]["nodes"]["loadBalancer"]["vrrp"] = {"advertInt": "often", "unicst": True}
    text = yaml.safe_dump(seed, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        load_text(text, context=ctx)
    by_path = {i.path: i for i in info.value.issues}
    assert "whole number" in by_path["cluster.nodes.loadBalancer.vrrp.advertInt"].message
    unknown = by_path["cluster.nodes.loadBalancer.vrrp.unicst"]
    assert "did you mean `unicast`?" in unknown.message
    assert "unicst: true" in text.splitlines()[unknown.line - 1]
    with pytest.raises(ConfigError, match="did you mean `vrrp`"):
        seed["cluster"]["nodes"]["loadBalancer"]["vrp"] = seed["cluster"]["nodes"]["loadBalancer"].pop("vrrp")
        load_data(seed, context=ctx)


def test_resolve_topology_on_a_programmatic_config():
    cfg = Config(hosts=[{"name": "h", "connection": {"type": "local"}}],
                 cluster={"name": "c", "network": {"cidr": "10.0.0.0/24"},
                          "nodes": {"master": {"instances": [{"id": "1", "ip": "10.0.0.10"}]}}})
    topo = resolve_topology(cfg)
    assert [n.name for n in topo.nodes] == ["c-master-1"] and topo.endpoint == "10.0.0.10"
    assert topo.nodes[0].host == "h" and topo.virtual_router_id is None
