"""SDK: what a plugin's conformance module may use (contributed with `kubitect_conformance_modules`).

The verify stage runs every contributed module with pytest-testinfra and the fixtures of the
generic suite, which a test function receives by name (no import needed):

    kubitect_inventory   the inventory the verify stage wrote (nodes, endpoint, VIP, facts, extensions)
    kubitect_cluster_dir the cluster's directory
    cluster_hosts        {node name: ClusterHost}; nodes, load_balancers, masters, workers: by role
    node, lb             parametrized: one test per node / per load balancer
    vip                  the VIP, or None
    vantage              where VIP clients run from (a node inside the cluster network)

`ClusterHost` is one node: `h.run(...)`/`h.service(...)` are testinfra's, `h.root(cmd)` runs as
root, `h.name`, `h.ip`, `h.role`, `h.info` come from the inventory.
"""

from kubitect_conformance.cluster import API_PORT, ClusterHost, kubernetes_facts, load_inventory, nodes_of

__all__ = ["API_PORT", "ClusterHost", "kubernetes_facts", "load_inventory", "nodes_of"]
