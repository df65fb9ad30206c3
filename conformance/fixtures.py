"""pytest fixtures and options shared by every conformance module (built-in or a plugin's).

The verify stage runs pytest with this module as a plugin (`-p kubitect_conformance.fixtures`);
`pytest conformance/ --cluster NAME` loads it through conformance/conftest.py. Either way the
modules read one inventory file the verify stage writes: nodes, endpoint, VIP, SSH access.

Fixtures:
- `kubitect_cluster_dir`, `kubitect_inventory`: where the cluster lives and what it is.
- `nodes`, `load_balancers`, `masters`, `workers`: lists of `ClusterHost` (testinfra hosts over
  the cluster's own SSH key and pinned known_hosts, plus name/ip/role/info). `load_balancers`
  are the nodes that serve the endpoint, as the load balancer recorded them (the load balancer
  instances, or the masters when the VIP lives there).
- `node`, `lb`: one `ClusterHost`; a test asking for them is parametrised per node / per load
  balancer (ids are node names). `data_disk`: one (ClusterHost, disk dict) per configured disk.
- `vantage`: where the API is probed from (see `kubitect_conformance.vip`).
- `api_port`: the port the endpoint serves the API on (the load balancer's record).
- `failover_bench`: the settled VIP, its possible holders and the declared budgets, for failover
  cases (`kubitect_conformance.failover_kit`); skips without a VIP and two nodes to hold it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubitect_core import failover
from kubitect_core.paths import cluster_dir, kubitect_home

from .cluster import (
    ClusterHost,
    SshControl,
    declared_failover,
    endpoint_node_names,
    kubernetes_facts,
    load_inventory,
    nodes_of,
    whoami_port,
)
from .cluster import api_port as recorded_api_port
from .failover_kit import Bench
from .vip import Vantage, api_target, choose_vantage, whoami_target

_INVENTORY = pytest.StashKey[dict]()
_SERIAL = pytest.StashKey[int]()


def pytest_addoption(parser):
    group = parser.getgroup("kubitect")
    group.addoption("--cluster", help="name of the kubitect cluster to check")
    group.addoption("--kubitect-home", help="kubitect home (default: $KUBITECT_HOME or ~/.kubitect)")
    group.addoption("--kubitect-cluster-dir", help="the cluster directory (instead of --cluster)")
    group.addoption("--failover-vantage", default=None,
                    help="where the failover prober runs: a node name, 'local', or unset = first worker, "
                         "else first master")
    group.addoption("--chaos", default=None,
                    help="destructive cases to run, comma-separated: host (lose the VIP holder's whole host)")
    group.addoption("--host-fault", default=None,
                    help="how the host is lost: power (its VMs destroyed at once, default) or uplink (lab only)")
    group.addoption("--failover-margin", type=float, default=None,
                    help="seconds added to every timer-derived failover budget (default: "
                         "kubitect_core.failover.DEFAULT_MARGIN_S)")


def pytest_configure(config):
    config.addinivalue_line("markers", "failover: VIP failover matrix (faults injected on the load balancers)")
    config.addinivalue_line("markers", "chaos: destructive cases (a whole host lost); only with --chaos")


def _cluster_dir_from(config) -> Path:
    explicit = config.getoption("--kubitect-cluster-dir", None)
    if explicit:
        return Path(explicit)
    name = config.getoption("--cluster", None)
    if not name:
        raise pytest.UsageError("conformance needs --cluster NAME (or --kubitect-cluster-dir DIR)")
    return cluster_dir(kubitect_home(config.getoption("--kubitect-home", None)), name)


def _inventory_from(config) -> dict:
    inv = config.stash.get(_INVENTORY, None)
    if inv is None:
        try:
            inv = load_inventory(_cluster_dir_from(config))
        except FileNotFoundError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[_INVENTORY] = inv
    return inv


def _params(items: list, ids: list[str], empty_reason: str) -> dict:
    if items:
        return {"argvalues": items, "ids": ids}
    return {"argvalues": [pytest.param(None, marks=pytest.mark.skip(reason=empty_reason))], "ids": ["none"]}


def pytest_generate_tests(metafunc):
    """Parametrises `node`, `lb` and `data_disk` from the inventory, so each node is its own check."""
    names = set(metafunc.fixturenames)
    if not names & {"node", "lb", "data_disk"}:
        return
    inv = _inventory_from(metafunc.config)
    if "node" in names:
        all_nodes = [n["name"] for n in nodes_of(inv)]
        metafunc.parametrize("node", indirect=True, **_params(all_nodes, all_nodes, "the cluster has no nodes"))
    if "lb" in names:
        lbs = endpoint_node_names(inv)
        metafunc.parametrize("lb", indirect=True, **_params(lbs, lbs, "the cluster has no load balancers"))
    if "data_disk" in names:
        disks = [(n["name"], d["name"]) for n in nodes_of(inv) for d in n.get("data_disks") or []]
        metafunc.parametrize("data_disk", indirect=True,
                             **_params(disks, [f"{a}:{b}" for a, b in disks], "no node has data disks"))


@pytest.fixture(scope="session")
def kubitect_cluster_dir(pytestconfig) -> Path:
    return _cluster_dir_from(pytestconfig)


@pytest.fixture(scope="session")
def kubitect_inventory(pytestconfig) -> dict:
    return _inventory_from(pytestconfig)


@pytest.fixture(scope="session")
def ssh_control(kubitect_inventory, kubitect_cluster_dir):
    """The exported ssh config with shared connections; closed when the session ends."""
    control = SshControl(kubitect_inventory, kubitect_cluster_dir)
    try:
        yield control
    finally:
        control.close()


@pytest.fixture(scope="session")
def cluster_hosts(kubitect_inventory, ssh_control) -> dict[str, ClusterHost]:
    """Every node by name."""
    return {n["name"]: ClusterHost(n, ssh_control) for n in nodes_of(kubitect_inventory)}


def _by_role(hosts: dict[str, ClusterHost], role: str | None) -> list[ClusterHost]:
    return [h for h in hosts.values() if role is None or h.role == role]


@pytest.fixture(scope="session")
def nodes(cluster_hosts) -> list[ClusterHost]:
    return _by_role(cluster_hosts, None)


@pytest.fixture(scope="session")
def load_balancers(kubitect_inventory, cluster_hosts) -> list[ClusterHost]:
    return [cluster_hosts[name] for name in endpoint_node_names(kubitect_inventory) if name in cluster_hosts]


@pytest.fixture(scope="session")
def masters(cluster_hosts) -> list[ClusterHost]:
    return _by_role(cluster_hosts, "master")


@pytest.fixture(scope="session")
def workers(cluster_hosts) -> list[ClusterHost]:
    return _by_role(cluster_hosts, "worker")


@pytest.fixture
def node(request, cluster_hosts) -> ClusterHost:
    return cluster_hosts[request.param]


@pytest.fixture
def lb(request, cluster_hosts) -> ClusterHost:
    return cluster_hosts[request.param]


@pytest.fixture
def data_disk(request, cluster_hosts) -> tuple[ClusterHost, dict]:
    name, disk = request.param
    host = cluster_hosts[name]
    return host, next(d for d in host.info["data_disks"] if d["name"] == disk)


@pytest.fixture(scope="session")
def vip(kubitect_inventory) -> str | None:
    return kubitect_inventory.get("vip")


@pytest.fixture(scope="session")
def vantage(pytestconfig, kubitect_inventory, ssh_control, cluster_hosts) -> Vantage:
    """Where the API and the VIP are probed from (a node outside the load balancers)."""
    wanted = pytestconfig.getoption("--failover-vantage", None)
    return choose_vantage(ssh_control, list(cluster_hosts.values()), wanted,
                          serving=endpoint_node_names(kubitect_inventory), whoami_port=whoami_port(kubitect_inventory))


@pytest.fixture(scope="session")
def api_port(kubitect_inventory) -> int:
    return recorded_api_port(kubitect_inventory)


@pytest.fixture(scope="session")
def failover_bench(request, kubitect_inventory, vip, pytestconfig) -> Bench:
    """The settled VIP the failover cases run on; skipped (with the reason) without a VIP and two
    nodes that may hold it. The target is the API when it answers through the VIP, else the
    implementation's whoami port (Kubernetes not installed yet), so the VIP is measured either way."""
    holders = request.getfixturevalue("load_balancers")
    if len(holders) < 2:
        pytest.skip(f"failover needs at least 2 nodes that may hold the VIP; this cluster has {len(holders)}")
    if not vip:
        pytest.skip("no VIP configured (cluster.nodes.loadBalancer.vip): there is nothing to fail over")
    margin = pytestconfig.getoption("--failover-margin", None)
    vantage = request.getfixturevalue("vantage")
    port = recorded_api_port(kubitect_inventory)
    bench = Bench(list(holders), vantage, vip, declared_failover(kubitect_inventory),
                  failover.DEFAULT_MARGIN_S if margin is None else float(margin), api_target(port))
    bench.settle(None, "before the failover cases")
    ok, detail = vantage.readyz(vip, port, timeout=3)
    if not ok:
        if kubernetes_facts(kubitect_inventory) is not None:
            pytest.fail(f"the API does not answer through {vip}:{port} from {vantage.name} ({detail}) before "
                        "any fault was injected: fix test_api_answers_through_the_endpoint first")
        if vantage.whoami_port is None:
            pytest.skip(f"no API server answers behind {vip}:{port} yet and the load balancer has no whoami port")
        bench.target = whoami_target(vantage.whoami_port)
    return bench
