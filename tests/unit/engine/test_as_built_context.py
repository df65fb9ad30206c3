"""The engine hands every stage after the machine layers the as-built topology, and only that.

A recording provider (a TEST DOUBLE: it makes nothing, it records a made-up lease per DHCP node
the way a real provider records what it made) and a recording load balancer stand in for the
backends; the real engine and stages run between them. The config is the `minimal` preset's
shape (nat, no IPs) with a load balancer and a worker, as a user with DHCP nodes writes it.
"""

from __future__ import annotations

import asyncio

import pytest
import yaml

from kubitect_core.contracts import Change
from kubitect_core.engine import Engine, EngineError, Options
from kubitect_core.hookspecs import hookimpl
from kubitect_core.plugins import load_registry
from kubitect_core.state import ClusterState

CLUSTER = "dh"
LEASES = {f"{CLUSTER}-lb-1": "192.168.113.57", f"{CLUSTER}-master-1": "192.168.113.88",
          f"{CLUSTER}-worker-1": "192.168.113.120"}


class RecordingLayer:
    """One layer of the recording provider: remembers the topology it was given."""

    def __init__(self, provider: RecordingProvider, layer: str):
        self.provider, self.layer = provider, layer

    async def plan(self, ctx, hosts):
        self.provider.seen[("plan", self.layer)] = ctx.topology
        return []

    async def apply(self, ctx, hosts):
        self.provider.seen[("apply", self.layer)] = ctx.topology
        if self.layer == "vms":
            nodes = ctx.record.setdefault("nodes", {})
            for i, n in enumerate(ctx.topology.nodes):
                ip = n.ip or nodes.get(n.name, {}).get("ip") or LEASES[n.name]
                nodes[n.name] = {"name": n.name, "host": n.host, "ip": ip, "mac": f"52:54:00:00:00:{i:02x}",
                                 "domain": f"{n.name}.dom"}
        return [Change("keep", self.layer, CLUSTER)]

    async def destroy(self, ctx, hosts):
        return []


class RecordingProvider:
    """TEST DOUBLE of a VM provider: records per node what the contract asks (name, host, ip, mac,
    domain), with the lease from LEASES for nodes the config gives no IP."""

    name = "libvirt"
    default = True

    def __init__(self):
        self.seen: dict[tuple[str, str], object] = {}
        self.network, self.storage, self.vms = (RecordingLayer(self, la) for la in ("network", "storage", "vms"))

    async def preflight(self, ctx, hosts):
        return []


class RecordingLoadBalancer:
    """TEST DOUBLE of the load balancer: remembers the topology it was given, records the endpoint."""

    name = "keepalived-haproxy"
    default = True

    def __init__(self):
        self.seen: dict[str, object] = {}

    async def plan(self, ctx):
        self.seen["plan"] = ctx.topology
        return []

    async def apply(self, ctx):
        self.seen["apply"] = ctx.topology
        ctx.record["endpoint"] = ctx.topology.endpoint
        ctx.record["backends"] = {n.name: n.ip for n in ctx.topology.masters}
        return []

    async def destroy(self, ctx):
        return []


class RecordingInstaller(RecordingLoadBalancer):
    """TEST DOUBLE of a Kubernetes installer: remembers the topology it was given."""

    name = "kubeadm"
    supported_versions = ("1.28.0", "1.35.99")
    maintained_from = "1.33.0"

    def internet_reason(self, ctx):
        return None

    async def apply(self, ctx):
        self.seen["apply"] = ctx.topology
        return []


class Doubles:
    def __init__(self):
        self.provider, self.lb, self.installer = RecordingProvider(), RecordingLoadBalancer(), RecordingInstaller()

    @hookimpl
    def kubitect_installers(self):
        return {"kubeadm": self.installer}

    @hookimpl
    def kubitect_vm_providers(self):
        return {"libvirt": self.provider}

    @hookimpl
    def kubitect_load_balancers(self):
        return {"keepalived-haproxy": self.lb}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBITECT_DISABLE_PLUGINS", "libvirt,nspawn,keepalived-haproxy,kubeadm,k3s,rook,conformance")
    monkeypatch.delenv("KUBITECT_PLUGINS", raising=False)
    cfg = tmp_path / "dh.yaml"
    cfg.write_text(yaml.safe_dump({
        "hosts": [{"name": "localhost", "connection": {"type": "local"}}],
        "cluster": {"name": CLUSTER, "network": {"cidr": "192.168.113.0/24"},
                    "nodes": {"loadBalancer": {"instances": [{"id": 1}]}, "master": {"instances": [{"id": 1}]},
                              "worker": {"instances": [{"id": 1}]}}},
    }))
    doubles = Doubles()
    return Engine(tmp_path / "home", load_registry(extra_plugins=[doubles])), cfg, doubles


def test_plan_on_a_fresh_cluster_shows_the_config_topology_without_addresses(setup):
    engine, cfg, doubles = setup
    asyncio.run(engine.plan(cfg, Options()))
    seen = doubles.lb.seen["plan"]
    assert [n.ip for n in seen.nodes] == [None, None, None]
    assert all(n.dhcp and n.address == "address assigned by DHCP" for n in seen.nodes)
    assert seen.endpoint == ""


def test_after_the_vms_stage_later_stages_see_the_leases_and_the_machine_layers_the_config(setup):
    engine, cfg, doubles = setup
    asyncio.run(engine.run_stages(cfg, ["network", "storage", "vms", "loadbalancers"], Options()))
    built = doubles.lb.seen["apply"]
    assert {n.name: n.ip for n in built.nodes} == LEASES
    assert {n.domain for n in built.nodes} == {f"{name}.dom" for name in LEASES}
    assert built.endpoint == LEASES[f"{CLUSTER}-lb-1"]
    record = ClusterState(engine.home, CLUSTER).load_record()
    assert record["stages"]["loadbalancers"]["data"] == {
        "endpoint": LEASES[f"{CLUSTER}-lb-1"], "backends": {f"{CLUSTER}-master-1": LEASES[f"{CLUSTER}-master-1"]}}
    asyncio.run(engine.run_stages(cfg, ["kubernetes"], Options()))
    assert {n.name: n.ip for n in doubles.installer.seen["apply"].nodes} == LEASES
    # the machine layers converge to the config: no lease in their view, on the second run either
    asyncio.run(engine.run_stages(cfg, ["network", "storage", "vms"], Options()))
    for layer in ("network", "storage", "vms"):
        assert [n.ip for n in doubles.provider.seen[("apply", layer)].nodes] == [None, None, None], layer
    # and a plan now shows what was built
    asyncio.run(engine.plan(cfg, Options()))
    assert {n.name: n.ip for n in doubles.lb.seen["plan"].nodes} == LEASES


def test_a_hand_broken_record_is_refused_naming_the_file(setup):
    engine, cfg, doubles = setup
    asyncio.run(engine.run_stages(cfg, ["network", "storage", "vms"], Options()))
    state = ClusterState(engine.home, CLUSTER)
    record = state.load_record()
    record["stages"]["vms"]["data"]["libvirt"]["nodes"][f"{CLUSTER}-master-1"]["ip"] = "$(reboot)"
    state.save_record(record)
    with pytest.raises(EngineError, match=r"record\.json: the vms stage recorded ip '\$\(reboot\)' for node dh-"):
        asyncio.run(engine.run_stages(cfg, ["loadbalancers"], Options()))


def test_destroy_still_works_when_the_record_holds_a_broken_address(setup):
    """destroy must always be possible: the later stages then get the config's topology."""
    engine, cfg, doubles = setup
    asyncio.run(engine.run_stages(cfg, ["network", "storage", "vms", "loadbalancers"], Options()))
    state = ClusterState(engine.home, CLUSTER)
    record = state.load_record()
    record["stages"]["vms"]["data"]["libvirt"]["nodes"][f"{CLUSTER}-lb-1"]["mac"] = {"not": "a mac"}
    state.save_record(record)
    asyncio.run(engine.destroy(CLUSTER, Options(auto_approve=True)))
    assert not state.exists()
