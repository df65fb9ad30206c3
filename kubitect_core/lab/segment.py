"""The L2 segment of a multi-host lab: one bridge in a switch namespace, one port per machine.

A real site has a switch and a router: here the switch is a Linux bridge in a namespace of its
own, and the router is just the gateway address on that bridge (it routes nowhere: the lab has
no way out). Every simulated host and the workstation get a veth pair whose one end is a port
of that bridge and whose other end is the machine's uplink. Both ends are created inside lab
namespaces (`ip -n SWITCH link add ... netns HOST`), so nothing is ever added to the root
namespace.

Cutting a host's uplink (`set_port(..., up=False)`) is a cable pulled at the switch: the host,
and every VM bridged behind it, drops off the segment at once, with carrier loss on both ends.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kubitect_core.lab import netns

SWITCH_BRIDGE = "seg"


@dataclass(frozen=True)
class Port:
    """One machine's connection to the segment: the switch-side port and the machine's uplink."""

    switch_port: str  # interface name inside the switch namespace, e.g. "p3"
    namespace: str  # the machine's network namespace
    uplink: str  # interface name inside the machine's namespace, e.g. "up0"


def create_switch(switch_ns: str, cidr: ipaddress.IPv4Network, gateway: str) -> None:
    """The switch namespace (already created, only `lo`) gets the segment bridge and the gateway."""
    run = netns.run_ip
    run("-n", switch_ns, "link", "add", SWITCH_BRIDGE, "type", "bridge")
    # No STP: ports forward at once, as on an unmanaged switch.
    run("-n", switch_ns, "link", "set", SWITCH_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    run("-n", switch_ns, "addr", "add", f"{gateway}/{cidr.prefixlen}", "dev", SWITCH_BRIDGE)
    run("-n", switch_ns, "link", "set", SWITCH_BRIDGE, "up")


def attach(switch_ns: str, port: Port) -> None:
    """Creates the veth pair of `port` (switch end enslaved to the segment bridge, both ends up)."""
    run = netns.run_ip
    run("-n", switch_ns, "link", "add", port.switch_port, "type", "veth", "peer", "name", port.uplink,
        "netns", port.namespace)
    run("-n", switch_ns, "link", "set", port.switch_port, "master", SWITCH_BRIDGE)
    run("-n", switch_ns, "link", "set", port.switch_port, "up")
    run("-n", port.namespace, "link", "set", port.uplink, "up")


def set_port(switch_ns: str, switch_port: str, *, up: bool) -> None:
    """Pulls (up=False) or plugs back (up=True) a machine's cable at the switch."""
    netns.run_ip("-n", switch_ns, "link", "set", switch_port, "up" if up else "down")


def port_is_up(switch_ns: str, switch_port: str) -> bool:
    """True when the switch port is administratively up."""
    out = netns.run_ip("-n", switch_ns, "-o", "link", "show", switch_port, check=False).stdout
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
    return "UP" in flags


def configure_bridged_host(ns: str, uplink: str, bridge: str, address: str, prefix: int, gateway: str) -> None:
    """A host as the seed describes it: bridge `bridge` enslaving its uplink, the host's address on
    the bridge, the default route via the gateway (which leads nowhere: the lab is closed)."""
    run = netns.run_ip
    run("-n", ns, "link", "add", bridge, "type", "bridge")
    run("-n", ns, "link", "set", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    run("-n", ns, "link", "set", uplink, "master", bridge)
    run("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", bridge)
    run("-n", ns, "link", "set", bridge, "up")
    run("-n", ns, "route", "add", "default", "via", gateway)


def configure_plain(ns: str, uplink: str, address: str, prefix: int, gateway: str) -> None:
    """A machine without a bridge (the workstation): the address on its uplink, default via gateway."""
    netns.run_ip("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", uplink)
    netns.run_ip("-n", ns, "route", "add", "default", "via", gateway)
