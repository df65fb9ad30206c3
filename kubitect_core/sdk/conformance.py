"""SDK: what a plugin's conformance module may use (contributed with `kubitect_conformance_modules`).

The verify stage runs every contributed module with pytest-testinfra and the fixtures of the
generic suite, which a test function receives by name (no import needed):

    kubitect_inventory   the inventory the verify stage wrote (nodes, endpoint, VIP, facts, extensions)
    kubitect_cluster_dir the cluster's directory
    cluster_hosts        {node name: ClusterHost}; nodes, masters, workers: by role
    load_balancers       the nodes that serve the endpoint, as the load balancer recorded them
    node, lb             parametrized: one test per node / per node serving the endpoint
    vip, api_port        the VIP (or None); the port the endpoint serves the API on
    vantage              where VIP clients run from (a node outside the load balancers)
    failover_bench       a settled VIP with the budgets the load balancer declared (skips without one)

`ClusterHost` is one node: `h.run(...)`/`h.service(...)` are testinfra's, `h.root(cmd)` runs as
root, `h.name`, `h.ip`, `h.role`, `h.info` come from the inventory.

A load balancer's own failover cases use the kit (`kubitect_conformance.failover_kit`): settle
the bench, `measure` the gap around a fault injected on the holder, `judge` it against the
declared budget (`Bench.budget(case)`: what the implementation recorded as
`failover.budgets[case]` at apply, plus the suite's margin), restore. `lb_facts(inventory)` is
everything the load balancer recorded.
"""

from kubitect_conformance.cluster import (
    API_PORT,
    ClusterHost,
    api_port,
    declared_failover,
    endpoint_node_names,
    kubernetes_facts,
    lb_facts,
    load_inventory,
    nodes_of,
    whoami_port,
)
from kubitect_conformance.failover_kit import (
    Bench,
    assert_no_split_brain,
    expect_new_holder,
    judge,
    kill_group,
    measure,
    root,
    wait_ssh,
)
from kubitect_conformance.vip import Budget, address_holders, holder_state, wait_single_holder

API_SERVER_PORT = API_PORT  # the port each API server itself listens on

__all__ = [
    "API_PORT", "API_SERVER_PORT", "Bench", "Budget", "ClusterHost", "address_holders", "api_port",
    "assert_no_split_brain", "declared_failover", "endpoint_node_names", "expect_new_holder", "holder_state",
    "judge", "kill_group", "kubernetes_facts", "lb_facts", "load_inventory", "measure", "nodes_of", "root",
    "wait_single_holder", "wait_ssh", "whoami_port",
]
