"""SDK: network-namespace facts, for providers that create bridges and addresses.

kubitect never changes the machine's root network namespace unless asked to: a provider checks
`in_root_netns()` before creating a bridge, and may need PID 1's namespaces (`init_ns_path`).
"""

from kubitect_core.lab.netns import in_root_netns, init_ns_path

__all__ = ["in_root_netns", "init_ns_path"]
