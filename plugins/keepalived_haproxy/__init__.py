"""Built-in plugin `keepalived-haproxy`: HAProxy in front of the masters, keepalived VRRP for the VIP.

Loaded through the `kubitect` entry-point group like any third-party plugin. It offers:
- the load balancer `keepalived-haproxy` (hook `kubitect_load_balancers`), see `plugin.py`:
  HAProxy and keepalived on the load balancer instances;
- the load balancer `control-plane-vip`, see `control_plane.py`: the same on the masters
  themselves (HAProxy on 8443), no load balancer VMs;
- the config extension `cluster.nodes.loadBalancer.vrrp` (hook `kubitect_config_extensions`),
  see `settings.py` for the profiles, their measured numbers and why, and `guard.py` for the
  warnings about where short timers would flap;
- its own conformance checks (hook `kubitect_conformance_modules`): `conformance_checks.py`
  (daemons, configs) and `conformance_failover.py` (its failover cases, held to the budgets
  `budgets.py` declares in the record at apply).
- a leaving load balancer hands the VIP over before its machine goes (hook
  `kubitect_nodes_leaving`), see `leaving.py`.
Rendering is pure and lives in `render.py` (templates next to it), node work in `node_ops.py`.
"""

from __future__ import annotations

from pathlib import Path

from kubitect_core.sdk import ConfigExtension, hookimpl

from . import leaving
from .control_plane import ControlPlaneVip
from .guard import config_warnings
from .plugin import NAME, KeepalivedHaproxy
from .settings import EXTENSION_KEY, EXTENSION_PATH, VrrpSettings

__all__ = ["ControlPlaneVip", "KeepalivedHaproxy",
           "VrrpSettings", "kubitect_config_extensions", "kubitect_conformance_modules",
           "kubitect_load_balancers", "kubitect_nodes_leaving"]


@hookimpl
def kubitect_load_balancers() -> dict[str, KeepalivedHaproxy]:
    """Offer both implementations under their config names (one word in the YAML picks one)."""
    return {NAME: KeepalivedHaproxy(), ControlPlaneVip.name: ControlPlaneVip()}


@hookimpl
def kubitect_config_extensions() -> list[ConfigExtension]:
    """Add the optional `vrrp` key under `cluster.nodes.loadBalancer` (defaults when absent), with
    its placement warnings (guard.config_warnings)."""
    return [ConfigExtension(path=EXTENSION_PATH, key=EXTENSION_KEY, model=VrrpSettings, plugin=NAME,
                            check=config_warnings)]


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    """Contribute this package's own checks to the verify stage: its daemons and configs, then its
    failover cases (keepalived stopped, HAProxy killed, ... with the budgets apply declared)."""
    return [str(Path(__file__).with_name(name)) for name in ("conformance_checks.py", "conformance_failover.py")]


@hookimpl
async def kubitect_nodes_leaving(ctx, nodes, dry_run):
    """A leaving load balancer stops keepalived first, so a VIP it holds moves before its machine
    goes; under control-plane-vip the same for a leaving master (drained in every HAProxy first)."""
    return (await leaving.nodes_leaving(ctx, nodes, dry_run, NAME)
            + await leaving.nodes_leaving(ctx, nodes, dry_run, ControlPlaneVip.name, masters_are_frontends=True))
