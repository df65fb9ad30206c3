"""The JSON Schema is valid, and every shipped preset and example validates against it and us."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from cfgedit import REPO

from kubitect_core.config import (
    ValidationContext,
    default_context,
    json_schema,
    list_presets,
    load_config,
    preset_text,
    validate_raw,
)
from kubitect_core.contracts import ConfigExtension
from kubitect_core.defaults import DefaultChoice

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_presets_are_the_five_of_the_original_plus_the_lab():
    assert list_presets() == sorted(["minimal", "getting-started", "example-single-node",
                                     "example-multi-worker", "example-multi-master", "lab"])


@pytest.mark.parametrize("name", list_presets())
def test_preset_validates(name, validator):
    data = yaml.safe_load(preset_text(name))
    validator.validate(data)
    loaded = validate_raw(data, source=name, text=preset_text(name))
    assert loaded.topology.masters and not [w for w in loaded.warnings if "version" in w.path]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path, validator):
    validator.validate(yaml.safe_load(path.read_text()))
    assert load_config(path).topology.nodes


def test_schema_rejects_what_validation_rejects(validator):
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    data["cluster"]["network"]["networkInterface"] = "eth0"
    assert not validator.is_valid(data)
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    data["cluster"]["network"]["mode"] = "bridged"
    assert not validator.is_valid(data)


def test_schema_uses_yaml_keys_and_includes_extensions():
    from pydantic import BaseModel

    class Vrrp(BaseModel):
        unicast: bool = False

    ctx = ValidationContext(**{**default_context().__dict__,
                               "extensions": [ConfigExtension("cluster.nodes.loadBalancer", "vrrp", Vrrp)]})
    schema = json_schema(ctx)
    jsonschema.Draft202012Validator.check_schema(schema)
    lb = schema["$defs"]["LoadBalancerNodes"]["properties"]
    assert {"vip", "virtualRouterId", "forwardPorts", "vrrp"} <= set(lb)
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    data["cluster"]["nodes"]["loadBalancer"]["vrrp"] = {"unicast": True}
    jsonschema.validate(data, schema)
    without = ValidationContext(**{**default_context().__dict__, "extensions": []})
    assert "vrrp" not in json_schema(without)["$defs"]["LoadBalancerNodes"]["properties"]


def test_schema_lists_the_installed_choices_and_the_defaults_they_declare():
    """An editor completes the plugin names that are installed; a third party's set replaces ours."""
    defs = json_schema()["$defs"]
    provider = defs["Host"]["properties"]["provider"]
    assert {"libvirt", "nspawn"} <= set(provider["anyOf"][0]["enum"]) and provider["default"] == "libvirt"
    manager = defs["Kubernetes"]["properties"]["manager"]
    assert {"kubeadm", "k3s", "kubespray"} <= set(manager["anyOf"][0]["enum"]) and manager["default"] == "kubeadm"
    lb = defs["LoadBalancerNodes"]["properties"]["implementation"]
    assert lb["default"] == "keepalived-haproxy"
    other = ValidationContext(providers=["proxmox"], load_balancers=["kube-vip", "keepalived-haproxy"],
                              defaults={"load_balancer": DefaultChoice("load balancer", ("kube-vip",))})
    defs = json_schema(other)["$defs"]
    assert defs["Host"]["properties"]["provider"]["anyOf"][0]["enum"] == ["proxmox"]
    assert defs["Host"]["properties"]["provider"]["default"] is None  # nobody claims it
    assert defs["LoadBalancerNodes"]["properties"]["implementation"]["default"] == "kube-vip"
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    data["hosts"][0]["provider"] = "libvirt"
    assert not jsonschema.Draft202012Validator(json_schema(other)).is_valid(data)
