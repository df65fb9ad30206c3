"""Built-in plugin `keepalived-haproxy`: HAProxy in front of the masters, keepalived VRRP for the VIP.

Loaded through the `kubitect` entry-point group like any third-party plugin. It offers:
- the load balancer `keepalived-haproxy` (hook `kubitect_load_balancers`), see `plugin.py`;
- the config extension `cluster.nodes.loadBalancer.vrrp` (hook `kubitect_config_extensions`),
  see `settings.py` for the profiles, their measured numbers and why, and `guard.py` for the
  warnings about where short timers would flap;
- its own conformance checks (hook `kubitect_conformance_modules`), see `conformance_checks.py`;
- a leaving load balancer hands the VIP over before its machine goes (hook
  `kubitect_nodes_leaving`), see `leaving.py`.
Rendering is pure and lives in `render.py` (templates next to it), node work in `node_ops.py`.
"""

from __future__ import annotations

from pathlib import Path

from kubitect_core.sdk import ConfigExtension, hookimpl

from . import leaving
from .guard import config_warnings
from .plugin import NAME, KeepalivedHaproxy
from .settings import EXTENSION_KEY, EXTENSION_PATH, VrrpSettings

__all__ = ["KeepalivedHaproxy", "VrrpSettings", "kubitect_config_extensions", "kubitect_conformance_modules",
           "kubitect_load_balancers", "kubitect_nodes_leaving"]


@hookimpl
def kubitect_load_balancers() -> dict[str, KeepalivedHaproxy]:
    """Offer the HAProxy + keepalived implementation under its config name."""
    return {NAME: KeepalivedHaproxy()}


@hookimpl
def kubitect_config_extensions() -> list[ConfigExtension]:
    """Add the optional `vrrp` key under `cluster.nodes.loadBalancer` (defaults when absent), with
    its placement warnings (guard.config_warnings)."""
    return [ConfigExtension(path=EXTENSION_PATH, key=EXTENSION_KEY, model=VrrpSettings, plugin=NAME,
                            check=config_warnings)]


@hookimpl
def kubitect_conformance_modules() -> list[str]:
    """Contribute this implementation's own checks (daemons, configs) to the verify stage."""
    return [str(Path(__file__).with_name("conformance_checks.py"))]


@hookimpl
async def kubitect_nodes_leaving(ctx, nodes, dry_run):
    """A leaving load balancer stops keepalived first, so a VIP it holds moves before its machine goes."""
    return await leaving.nodes_leaving(ctx, nodes, dry_run, NAME)
