"""Every row of the change-rule tables (reference/kubitect.md §3.2), on real resolved configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubitect_core.changes import diff, evaluate
from kubitect_core.config import validate_raw
from kubitect_core.engine import resolved_dump

SEED = Path(__file__).resolve().parents[3] / "examples" / "ha.yaml"


def _base() -> dict:
    raw = yaml.safe_load(SEED.read_text())
    raw["hosts"][2]["mainResourcePoolPath"] = "/var/lib/libvirt/images/"
    raw["cluster"]["nodes"]["loadBalancer"]["forwardPorts"] = [{"name": "http", "port": 80}]
    raw["cluster"]["nodes"]["worker"]["default"] = {"labels": {"tier": "app"}}
    raw["addons"] = {"kubespray": {"metallb_enabled": False}}
    return raw


def _events(mutate, action):
    old = _base()
    new = copy.deepcopy(old)
    mutate(new)
    before = resolved_dump(validate_raw(old))
    after = resolved_dump(validate_raw(new))
    return evaluate(before, after, action)


N = lambda raw: raw["cluster"]["nodes"]  # noqa: E731
W = lambda raw: N(raw)["worker"]["instances"]  # noqa: E731


def _add_worker(raw):
    W(raw).append({"id": 4, "ip": "10.10.13.23", "host": "host3"})


def _add_lb(raw):
    N(raw)["loadBalancer"]["instances"].append({"id": 3, "ip": "10.10.13.203", "host": "host1"})


def _add_master(raw):
    N(raw)["master"]["instances"] += [{"id": 4, "ip": "10.10.13.13", "host": "host3"},
                                      {"id": 5, "ip": "10.10.13.14", "host": "host4"}]


def _add_host(raw):
    raw["hosts"].append({"name": "host6", "connection": {"type": "local"}})


def _set(path, value):
    def mutate(raw):
        node = raw
        *parents, last = path
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _drop_pool(raw):
    del raw["hosts"][4]["dataResourcePools"]
    del W(raw)[2]["dataDisks"]


CASES = [
    # create / modify rules
    ("create", _set(("hosts", 2, "mainResourcePoolPath"), "/srv/pools"), "hosts[host3].mainResourcePoolPath",
     "warn", "main resource pool"),
    ("create", _drop_pool, "hosts[host5].dataResourcePools[data-pool]", "warn", "destroys all the data"),
    ("create", _set(("hosts", 2, "dataResourcePools", 0, "path"), "/srv/data"),
     "hosts[host3].dataResourcePools[data-pool].path", "warn", "data is lost"),
    ("create", lambda r: r["hosts"][2]["dataResourcePools"].append({"name": "fast", "path": "/srv/fast"}),
     "hosts[host3].dataResourcePools[fast]", "allow", ""),
    ("create", _set(("cluster", "network", "cidr"), "10.10.0.0/16"), "cluster.network.cidr", "error",
     "network of an existing cluster"),
    ("create", _set(("cluster", "nodeTemplate", "user"), "admin"), "cluster.nodeTemplate.user", "error",
     "node template"),
    ("create", lambda r: W(r).pop(), "cluster.nodes.worker.instances[3]", "error", "To remove nodes"),
    ("create", _add_worker, "cluster.nodes.worker.instances[4]", "error", "To add nodes"),
    ("create", _set(("cluster", "nodes", "master", "default"), {"cpu": 4}), "cluster.nodes.master.default.cpu",
     "error", "recreate the node"),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "ram"), 8),
     "cluster.nodes.worker.instances[1].ram", "error", "recreate the node"),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "mainDiskSize"), 64),
     "cluster.nodes.worker.instances[1].mainDiskSize", "error", "recreate the node"),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "ip"), "10.10.13.30"),
     "cluster.nodes.worker.instances[1].ip", "error", "IP address cannot be changed"),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "mac"), "52:54:00:00:00:01"),
     "cluster.nodes.worker.instances[1].mac", "error", "MAC address cannot be changed"),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "dataDisks", 0, "size"), 256),
     "cluster.nodes.worker.instances[1].dataDisks[rook].size", "warn", "recreated"),
    ("create", lambda r: W(r)[0].pop("dataDisks"), "cluster.nodes.worker.instances[1].dataDisks[rook]", "warn",
     "data disks will be removed"),
    ("create", _set(("cluster", "nodes", "loadBalancer", "forwardPorts"), [{"name": "http", "port": 8080}]),
     "cluster.nodes.loadBalancer.forwardPorts[http].port", "allow", ""),
    ("create", _set(("cluster", "nodes", "loadBalancer", "vip"), "10.10.13.199"), "cluster.nodes.loadBalancer.vip",
     "error", "VIP of an existing cluster"),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "labels"), {"disk": "ssd"}),
     "cluster.nodes.worker.instances[1].labels.disk", "allow", ""),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "taints"), ["a=b:NoSchedule"]),
     "cluster.nodes.worker.instances[1].taints", "allow", ""),
    ("create", _set(("cluster", "nodes", "loadBalancer", "instances", 0, "priority"), 200),
     "cluster.nodes.loadBalancer.instances[1].priority", "allow", ""),
    ("create", lambda r: W(r)[1].setdefault("dataDisks", []).append({"name": "extra", "size": 8}),
     "cluster.nodes.worker.instances[2].dataDisks[extra]", "allow", ""),
    ("create", _set(("cluster", "nodes", "worker", "instances", 0, "host"), "host4"),
     "cluster.nodes.worker.instances[1].host", "error", "recreates it"),
    ("create", _set(("kubernetes", "version"), "v1.29.1"), "kubernetes.version", "error", "--action upgrade"),
    ("create", _set(("addons", "kubespray"), {"metallb_enabled": True}), "addons.kubespray.metallb_enabled",
     "allow", ""),
    ("create", _set(("kubernetes", "networkPlugin"), "cilium"), "kubernetes.networkPlugin", "error",
     "not allowed on an existing cluster"),
    ("create", _set(("cluster", "nodes", "loadBalancer", "virtualRouterId"), 77),
     "cluster.nodes.loadBalancer.virtualRouterId", "error", "not allowed"),
    ("create", _set(("cluster", "nodes", "worker", "default"), {"labels": {"tier": "db"}}),
     "cluster.nodes.worker.default.labels.tier", "error", "not allowed"),
    ("create", _add_host, "hosts[host6]", "error", "not allowed"),
    ("create", _set(("hosts", 0, "connection", "ip"), "10.10.0.50"), "hosts[host1].connection.ip", "error",
     "not allowed"),
    # upgrade rules
    ("upgrade", _set(("kubernetes", "version"), "v1.29.1"), "kubernetes.version", "allow", ""),
    ("upgrade", _set(("kubernetes", "version"), "v1.28.9"), "kubernetes.version", "allow", ""),  # a patch
    ("upgrade", _set(("kubernetes", "version"), "v1.28.1"), "kubernetes.version", "error", "Downgrading"),
    ("upgrade", _set(("kubernetes", "version"), "v1.30.1"), "kubernetes.version", "error",
     "one minor version at a time (v1.28.6 -> v1.30.1): 1.28 → 1.29 → 1.30"),
    ("upgrade", _set(("kubernetes", "version"), "v1.30.1"), "kubernetes.version", "error", "--walk-minors"),
    ("upgrade", _set(("kubernetes", "manager"), "k3s"), "kubernetes.manager", "error", "only 'kubernetes.version'"),
    ("upgrade", _add_worker, "cluster.nodes.worker.instances[4]", "error", "only 'kubernetes.version'"),
    # scale rules
    ("scale", _add_worker, "cluster.nodes.worker.instances[4]", "allow", ""),
    ("scale", lambda r: W(r).pop(), "cluster.nodes.worker.instances[3]", "allow", ""),
    ("scale", _add_lb, "cluster.nodes.loadBalancer.instances[3]", "allow", ""),
    ("scale", lambda r: N(r)["loadBalancer"]["instances"].pop(), "cluster.nodes.loadBalancer.instances[2]",
     "allow", ""),
    ("scale", _add_master, "cluster.nodes.master.instances[4]", "allow", ""),
    ("scale", _add_master, "cluster.nodes.master.instances[5]", "allow", ""),
    ("scale", lambda r: N(r)["master"]["instances"].__delitem__(slice(1, 3)), "cluster.nodes.master.instances[3]",
     "warn", "removes its etcd member first"),
    ("scale", lambda r: N(r)["master"]["instances"].__delitem__(slice(1, 3)), "cluster.nodes.master.instances[2]",
     "warn", "quorum checked before and after"),
    ("scale", _set(("cluster", "nodes", "master", "instances", 0, "ip"), "10.10.13.19"),
     "cluster.nodes.master.instances[1].ip", "error", "may only add or remove masters"),
    ("scale", _add_host, "hosts[host6]", "allow", ""),
    ("scale", _set(("kubernetes", "version"), "v1.29.1"), "kubernetes.version", "error",
     "may only add or remove masters, workers"),
]


@pytest.mark.parametrize("action,mutate,path,severity,message", CASES,
                         ids=[f"{c[0]}:{c[2]}:{c[3]}" for c in CASES])
def test_change_rule(action, mutate, path, severity, message):
    events = {e.path: e for e in _events(mutate, action)}
    assert path in events, f"no event at {path}; got {sorted(events)}"
    assert events[path].severity == severity
    assert message in events[path].message


def test_a_multi_minor_upgrade_walked_on_request_is_a_warning_naming_the_path():
    """`--walk-minors`: the jump is no longer refused; it asks for confirmation, naming each minor."""
    def jump(raw):
        raw["kubernetes"]["version"] = "v1.30.1"

    old, new = _base(), _base()
    jump(new)
    events = evaluate(resolved_dump(validate_raw(old)), resolved_dump(validate_raw(new)), "upgrade", walk=True)
    (event,) = [e for e in events if e.path == "kubernetes.version"]
    assert event.severity == "warn" and "1.28 → 1.29 → 1.30" in event.message
    down = _base()
    down["kubernetes"]["version"] = "v1.28.1"
    (event,) = evaluate(resolved_dump(validate_raw(old)), resolved_dump(validate_raw(down)), "upgrade", walk=True)
    assert event.severity == "error" and "Downgrading" in event.message  # walking never goes down


def test_a_default_added_in_a_newer_release_is_not_a_change():
    """The stored raw config lacks keys that today's defaults fill: resolving both sides hides them."""
    old = _base()
    new = copy.deepcopy(old)
    new["kubernetes"]["manager"] = "kubeadm"  # what an old config without the key now resolves to
    new["cluster"]["nodes"]["loadBalancer"]["instances"][0]["priority"] = 10
    new["hosts"][0]["connection"]["ssh"]["port"] = 22
    assert diff(old, new) != []  # the raw files differ ...
    assert evaluate(resolved_dump(validate_raw(old)), resolved_dump(validate_raw(new)), "upgrade") == []


def test_unchanged_config_has_no_events():
    assert _events(lambda r: None, "create") == []
