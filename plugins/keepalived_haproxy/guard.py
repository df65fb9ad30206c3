"""Guard rails for short VRRP timers: where a profile would flap, say so before it does.

A backup takes over from a master it has not heard for 3 adverts. With advertInt 0.1 that is
0.3 s: any stall of the master's keepalived that long (an overcommitted host not scheduling the
VM, both load balancers starved on one host, a node that refuses real-time scheduling) is a
false failover. Two kinds of checks, both pure:

- from the config (`config_warnings`, run when the config is validated): both load balancers on
  one host, so one host's trouble stalls both and a host loss takes both;
- from the node (`node_warnings`, run by the plugin on every load balancer it configures, from
  `node_probe.sh`): the kernel refuses a feature a setting needs, or the VM is overcommitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubitect_core.sdk import Topology

from .render import NodeFeatures
from .settings import VrrpSettings

# Below this many missed seconds a scheduling stall becomes a false takeover worth a warning
# (the standard profile's 1.5 s survives what the fast profile's 0.3 s does not).
SHORT_DOWN_TIMER_S = 1.0
# A VM whose vCPUs waited for a physical CPU more than this share of the time since boot
# (/proc/stat steal) runs on an overcommitted host.
STEAL_WARN_PERMILLE = 20
EXTENSION_LOC = ("cluster", "nodes", "loadBalancer", "vrrp")
# systemd-detect-virt's name for QEMU's software emulation (TCG); KVM guests say "kvm".
EMULATED_VIRT = "qemu"


@dataclass(frozen=True)
class NodeProbe:
    """What `node_probe.sh` found on one load balancer node."""

    features: NodeFeatures
    virt: str = "none"
    container: str = "none"
    steal_permille: int = 0
    swap_devices: int = 0
    cpus: int = 1
    process_events_error: str = ""


def parse_probe(text: str) -> NodeProbe:
    """The probe's key=value lines as a NodeProbe (unknown or malformed lines are ignored)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value.strip()

    def flag(key: str) -> bool:
        return values.get(key) == "1"

    def number(key: str, default: int) -> int:
        try:
            return int(values.get(key, default))
        except ValueError:
            return default

    features = NodeFeatures(process_events=flag("process_events"), realtime=flag("realtime"),
                            memlock=flag("memlock"))
    return NodeProbe(features, values.get("virt", "none") or "none", values.get("container", "none") or "none",
                     number("steal_permille", 0), number("swap_devices", 0), number("cpus", 1),
                     values.get("process_events_error", "").replace("_", " "))


def short_timers(settings: VrrpSettings) -> bool:
    """True when a stall shorter than SHORT_DOWN_TIMER_S already means a takeover."""
    return 3 * float(settings.advert_int) < SHORT_DOWN_TIMER_S


def node_warnings(settings: VrrpSettings, probe: NodeProbe) -> list[str]:
    """What the node lacks for these settings, and whether it is overcommitted, in user words."""
    out = []
    down = 3 * float(settings.advert_int)
    if settings.realtime and not probe.features.realtime:
        out.append("systemd cannot run keepalived with real-time scheduling here (a cgroup without "
                   "real-time budget, or no CAP_SYS_NICE), so it runs at normal priority: CPU load on this node "
                   f"can delay its adverts past the {down:g} s takeover timer. Allow SCHED_RR for keepalived, or use "
                   "`vrrp: {profile: standard}`")
    if settings.realtime and probe.features.realtime and not probe.features.memlock and probe.swap_devices:
        out.append("keepalived cannot lock itself in memory here (no CAP_IPC_LOCK) and the node swaps: a "
                   f"swapped-out keepalived can miss its {down:g} s takeover timer")
    if short_timers(settings) and probe.virt == EMULATED_VIRT:
        out.append(f"this VM is emulated (QEMU without hardware virtualization, TCG): its vCPU runs only when "
                   f"the host schedules the emulator, which reports no steal, and under CPU load the backup "
                   f"misses the master's adverts for the {down:g} s takeover timer and takes the VIP over "
                   "(measured: false takeovers every few seconds on a loaded 2-core host). Use KVM, or "
                   "`vrrp: {profile: standard}`")
    if short_timers(settings) and probe.steal_permille >= STEAL_WARN_PERMILLE:
        out.append(f"this VM waited for a physical CPU {probe.steal_permille / 10:g} % of the time since boot "
                   f"(steal): its host is overcommitted, and a {down:g} s takeover timer will flap. Give the "
                   "load balancers dedicated CPUs, or use `vrrp: {profile: standard}`")
    return out


def node_notes(settings: VrrpSettings, probe: NodeProbe) -> list[str]:
    """How HAProxy's exit is watched on this node (not a problem: said once, for the record)."""
    if not settings.track_haproxy_exit:
        return []
    if probe.features.process_events:
        return ["HAProxy's exit is tracked by kernel process events and by systemd"]
    reason = f" ({probe.process_events_error})" if probe.process_events_error else ""
    return [f"HAProxy's exit is tracked by systemd (no kernel process events in this network "
            f"namespace{reason})"]


def config_warnings(settings: VrrpSettings, topology: Topology) -> list[tuple[tuple, str]]:
    """Placement problems the config shows: load balancers that share a host under short timers
    (under control-plane-vip, which refuses load balancer instances, the masters hold the VIP)."""
    if topology.load_balancers:
        lbs, kind, key = topology.load_balancers, "load balancers", "loadBalancer"
    else:
        lbs, kind, key = topology.masters, "masters (they hold the VIP: control-plane-vip)", "master"
    if len(lbs) < 2 or not topology.vip or not short_timers(settings):
        return []
    by_host: dict[str, list[str]] = {}
    for lb in lbs:
        by_host.setdefault(lb.host or "(default host)", []).append(lb.name)
    shared = {h: names for h, names in by_host.items() if len(names) > 1}
    if not shared:
        return []
    where = "; ".join(f"{', '.join(names)} on {host}" for host, names in sorted(shared.items()))
    down = 3 * float(settings.advert_int)
    return [(EXTENSION_LOC, (
        f"the {settings.profile} VRRP profile takes the VIP over after {down:g} s without adverts, but {kind} "
        f"share a host ({where}): one busy host stalls both, and losing it loses both. Put them on different "
        f"hosts (cluster.nodes.{key}.instances[].host), or "
        "use `vrrp: {profile: standard}`."))]

