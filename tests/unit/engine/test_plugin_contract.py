"""The contract is checked when plugins load, and the defaults Kubitect users expect are declared by
plugins, not by core.

Plugins here are written to a temporary directory and loaded the way a user tries a plugin
(`KUBITECT_PLUGINS`), next to the TEST DOUBLE backends of tests/fixtures; the real CLI runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from kubitect_core.config import ConfigError, from_registry, load_config_text
from kubitect_core.plugins import load_registry

BROKEN = '''
from kubitect_core.sdk import Change, hookimpl


class OldStyleProvider:
    """Written for the contract before providers were three layer objects."""
    name = "old"

    async def plan(self, layer, ctx, hosts):
        return []

    apply = destroy = plan

    async def preflight(self, ctx, hosts):
        return []


class SyncLoadBalancer:
    name = "sync-lb"

    async def plan(self, ctx):
        return []

    def apply(self, ctx):  # not async: the stage could not await it
        return []

    async def destroy(self, ctx):
        return []


class Layer:
    async def plan(self, ctx, hosts):
        return []

    apply = destroy = plan


class GoodProvider:
    name = "good"

    def __init__(self):
        self.network = self.storage = self.vms = Layer()

    async def preflight(self, ctx, hosts):
        return []


@hookimpl
def kubitect_vm_providers():
    return {"old": OldStyleProvider(), "good": GoodProvider(), "misnamed": GoodProvider()}


@hookimpl
def kubitect_load_balancers():
    return {"sync-lb": SyncLoadBalancer()}
'''

SECOND_DEFAULT = '''
from kubitect_core.sdk import hookimpl


class Layer:
    async def plan(self, ctx, hosts):
        return []

    apply = destroy = plan


class Proxmox:
    name = "proxmox"
    default = True

    def __init__(self):
        self.network = self.storage = self.vms = Layer()

    async def preflight(self, ctx, hosts):
        return []


@hookimpl
def kubitect_vm_providers():
    return {"proxmox": Proxmox()}
'''


@pytest.fixture
def plant(fake_env, monkeypatch):
    """Writes a plugin module next to the doubles and adds it to KUBITECT_PLUGINS."""
    def _plant(name: str, source: str) -> None:
        (fake_env / "site").mkdir(exist_ok=True)
        (fake_env / "site" / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.setenv("KUBITECT_PLUGINS", f"{os.environ['KUBITECT_PLUGINS']},{name}")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake_env / "site"), os.environ["PYTHONPATH"]]))
        monkeypatch.syspath_prepend(str(fake_env / "site"))
    return _plant


def kubitect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"}, timeout=120)


def test_objects_that_break_the_contract_are_reported_by_plugin_name_and_left_out(plant):
    plant("broken_backends", BROKEN)
    registry = load_registry()
    [broken] = [p for p in registry.plugins if p.name == "broken_backends"]
    assert "provider 'old' ignored" in broken.error and "'network' is missing" in broken.error
    assert "load balancer 'sync-lb' ignored" in broken.error and "'apply' must be a coroutine" in broken.error
    assert "provider 'misnamed' ignored" in broken.error and "its name is 'good'" in broken.error
    assert "good" in registry.providers and not {"old", "misnamed"} & set(registry.providers)
    assert "sync-lb" not in registry.load_balancers
    assert broken.provides == ["provider good"]


def test_the_cli_lists_a_broken_plugin_and_keeps_working(plant, fake_env):
    plant("broken_backends", BROKEN)
    listed = kubitect("list", "plugins")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "broken_backends" in line)
    assert "failed to load" in row and "'vms' is missing" in row and "provider good" not in row
    applied = kubitect("apply", str(fake_env / "ha.yaml"), "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "broken_backends" in applied.stdout + applied.stderr  # named, not a traceback
    assert "Traceback" not in applied.stdout + applied.stderr


def test_the_builtins_declare_the_kubitect_defaults(monkeypatch):
    monkeypatch.delenv("KUBITECT_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("KUBITECT_PLUGINS", raising=False)
    registry = load_registry()
    assert {k: c.name for k, c in registry.defaults.items()} == {
        "provider": "libvirt", "load_balancer": "keepalived-haproxy", "installer": "kubeadm"}
    provides = [p for info in registry.plugins for p in info.provides]
    assert {"provider libvirt (default)", "load balancer keepalived-haproxy (default)",
            "installer kubeadm (default)", "provider nspawn", "installer k3s"} <= set(provides)


def test_omitted_names_resolve_to_the_plugin_defaults_as_in_kubitect(fake_env):
    seed = yaml.safe_load((fake_env / "ha.yaml").read_text())
    seed["kubernetes"].pop("manager", None)
    seed["cluster"]["nodes"]["loadBalancer"].pop("implementation", None)
    loaded = load_config_text(yaml.safe_dump(seed), "ha.yaml", context=from_registry(load_registry()))
    assert {h.provider for h in loaded.config.hosts} == {"libvirt"}
    assert loaded.config.cluster.nodes.load_balancer.implementation == "keepalived-haproxy"
    assert loaded.config.kubernetes.manager == "kubeadm"
    assert "provider" not in loaded.config.hosts[0].model_fields_set  # a default, not the user's word
    seed["kubernetes"]["manager"] = "kubespray"
    loaded = load_config_text(yaml.safe_dump(seed), "ha.yaml", context=from_registry(load_registry()))
    assert loaded.config.kubernetes.manager == "kubeadm"
    assert any("'kubespray' is served by the 'kubeadm' installer (what Kubespray runs underneath)" in n
               for n in loaded.notices)


def test_two_plugins_claiming_one_default_fail_only_the_configs_that_rely_on_it(plant, fake_env):
    plant("second_default", SECOND_DEFAULT)
    listed = kubitect("list", "plugins")
    assert "claims the default, as do: libvirt, proxmox" in listed.stdout
    refused = kubitect("validate", str(fake_env / "ha.yaml"))
    assert refused.returncode == 1
    out = " ".join(refused.stderr.split())
    assert "hosts[0].provider" in out and "'libvirt', 'proxmox' each claim it" in out
    assert "[libvirt|nspawn|proxmox]" in out and "Traceback" not in out
    seed = yaml.safe_load((fake_env / "ha.yaml").read_text())
    for host in seed["hosts"]:
        host["provider"] = "proxmox"
    (fake_env / "named.yaml").write_text(yaml.safe_dump(seed))
    named = kubitect("validate", str(fake_env / "named.yaml"))
    assert named.returncode == 0, named.stderr


def test_no_default_provider_installed_names_the_choices(monkeypatch, fake_env):
    monkeypatch.setenv("KUBITECT_DISABLE_PLUGINS", os.environ["KUBITECT_DISABLE_PLUGINS"])
    registry = load_registry()
    registry.defaults["provider"] = type(registry.defaults["provider"])("VM provider", ())  # nobody claims it
    with pytest.raises(ConfigError) as info:
        load_config_text((fake_env / "ha.yaml").read_text(), "ha.yaml", context=from_registry(registry))
    messages = {i.path: i.message for i in info.value.issues}
    assert "no installed plugin declares itself the default VM provider" in messages["hosts[0].provider"]
    assert messages["hosts[0].provider"].endswith("[libvirt|nspawn].")


def test_an_optional_capability_may_be_left_out_but_is_checked_when_present():
    """A protocol method marked @optional (a capability only some plugins have) is no problem
    when absent, and held to the contract's shape when a plugin offers it."""
    from typing import Protocol

    from kubitect_core.contract_check import contract_problems, optional

    class Chaos(Protocol):
        name: str

        async def plan(self, ctx) -> list: ...

        @optional
        async def power_off(self, host: str, names: list[str]) -> dict: ...

    class Plain:
        name = "plain"

        async def plan(self, ctx):
            return []

    class Capable(Plain):
        async def power_off(self, host, names):
            return {}

    class WrongShape(Plain):
        def power_off(self, host):
            return {}

    class NoPlan:
        name = "no-plan"

        async def power_off(self, host, names):
            return {}

    assert contract_problems(Plain(), Chaos) == []
    assert contract_problems(Capable(), Chaos) == []
    assert contract_problems(WrongShape(), Chaos) == [
        "'power_off' must be a coroutine (async def), as the stage awaits it"]
    assert contract_problems(NoPlan(), Chaos) == ["method 'plan' is missing"]
