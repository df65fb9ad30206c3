"""The built-in conformance plugin: contributes the `test_*.py` modules of this package."""

from pathlib import Path

from kubitect_core.hookspecs import hookimpl

# Cheap checks first; the failover matrix (which injects faults), then the loss of a whole host, last.
ORDER = ("test_nodes.py", "test_loadbalancers.py", "test_kubernetes.py", "test_failover.py",
         "test_host_loss.py")


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    """Every conformance module of this package, in ORDER, then any others by name."""
    found = sorted(Path(__file__).parent.glob("test_*.py"), key=lambda p: (
        ORDER.index(p.name) if p.name in ORDER else len(ORDER), p.name))
    return [str(p) for p in found]
