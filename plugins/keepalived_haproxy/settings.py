"""The VRRP settings extension: `cluster.nodes.loadBalancer.vrrp` (keys the original cannot set).

An original Kubitect config has no `vrrp` key; the default profile then applies. A profile is a
set of defaults for every other key; a key written in the config always wins over its profile.

Measured with bench/failover_side_by_side.py: the three configurations one after the other in
one run, each fault on the VIP holder, median gap in ms for a client opening a fresh connection
per request / a client holding one keep-alive connection (min and max per cell, and every run, in
bench/results/; docs/failover.md has the tables).

nspawn nodes, 2-core host, 10 runs per cell (bench/results/side-by-side-nspawn.json):

    fault                Kubitect's settings   standard       fast
    keepalived stopped       965 / 1745        495 / 908      24 / 70
    HAProxy killed          4377 / 4407        516 / 1088     45 / 68
    keepalived crashed   takeover 3478         1759           271  (clients: no gap, old HAProxy serves)
    link cut                3444 / 4090       1787 / 2068    276 / 486
    host lost               3694 / 4088       1746 / 1779    279 / 426

TCG VMs (1 vCPU each, 3 VMs on the same 2-core host, clients every 50 ms), 5 runs per cell, 3 for host lost
(standard not measured on VMs yet) (bench/results/side-by-side-vm.json):

    fault                  Kubitect's settings                  fast
    keepalived stopped             1021 / 1893              58 / 338
    HAProxy killed                 4115 / 4952             121 / 310
    keepalived crashed           takeover 3178          takeover 198
    link cut                       3308 / 4167             307 / 560
    host lost                      3226 / 4192             258 / 392

and a 10-minute soak of the fast profile with both load balancers' CPUs saturated
(bench/lb_soak.py, bench/results/soak-nspawn.json): 0 VIP moves, 0 failed of 30007 fresh and
24395 keep-alive requests, no "timer expired" in keepalived's log. That is why `fast` is the
default: 12-13x Kubitect's settings for a lost holder, ~100x for a killed HAProxy, and no false
failover under load once keepalived runs real-time. `standard` is for nodes that cannot give
keepalived real-time scheduling, emulated VMs (TCG: a loaded host does not run the vCPU for
0.3 s at a time; a capture of the VM e2e under two extra busy loops showed 21 false takeovers in
5 minutes with `fast`), shared or overcommitted hosts: the guard rails say when.

Why the timers are what they are:

- A backup takes over from a holder that is gone (crashed keepalived, cut link, lost host) after
  Master_Down_Interval = 3 x advertInt + skew, skew = (256 - priority) / 256 x advertInt
  (VRRPv3). Nothing else shortens it: BFD only changes priorities and re-arms the same timer
  (day2-and-fast-failover.md 1.2). So advertInt is the one lever for the "holder gone" case.
- A graceful handover (keepalived stopped, or the instance in FAULT) costs only the backup's skew:
  the leaving holder sends a priority-0 advert. That is why HAProxy's death must mean FAULT
  (weight 0), and why `rankPriorities` moves the priorities to the top of the range (order kept):
  at advertInt 0.1 a backup of priority 10 waits 96 ms, one of priority 234 waits 9 ms.
- HAProxy's death is noticed by events, not by polling, when `trackHaproxyExit` is on: systemd
  writes 1 to a tracked file when haproxy.service stops for any reason (ExecStopPost), keepalived
  reads it through inotify; on nodes whose kernel delivers process events to keepalived (VMs,
  not containers in a network namespace) `vrrp_track_process` watches the process as well. The
  HAProxy health check stays, for an HAProxy that hangs rather than dies, and because dying is
  caught by events it can be patient: `checkFall` 3 (3 s). With fall 1 or 2 a loaded node (CI:
  load average ~10, TCG VMs) saw its bash check miss the 1 s timeout twice in a row on both load
  balancers; both went FAULT and the VIP was gone, a failover caused by the check itself.
- A short advertInt only pays off if keepalived is never starved: a master that is not scheduled
  for 3 adverts (0.3 s at 0.1) is replaced although it is healthy ("thread timer expired", the
  known cause of flapping at small intervals). `realtime` runs the VRRP process with SCHED_RR
  (and locked in memory where the node allows it); `preempt` false (nopreempt) makes a false
  takeover cost one handover, not two; dual masters are resolved with higher-priority adverts
  and a GARP repeat. The soak (bench/lb_soak.py) checks that no VIP moves under full CPU load.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

Profile = Literal["standard", "fast"]

# Every key a profile fills, by field name. `standard` keeps the timers tolerant of a loaded or
# overcommitted host (1.5 s of missed adverts before a takeover); `fast` is near VRRP's floor.
PROFILES: dict[str, dict[str, Any]] = {
    "standard": {"advert_int": 0.5, "unicast": True, "preempt": True, "check_interval": 1, "check_fall": 3,
                 "check_rise": 2, "track_haproxy_exit": True, "realtime": False, "rank_priorities": False},
    "fast": {"advert_int": 0.1, "unicast": True, "preempt": False, "check_interval": 1, "check_fall": 3,
             "check_rise": 2, "track_haproxy_exit": True, "realtime": True, "rank_priorities": True},
}
DEFAULT_PROFILE: Profile = "fast"
# The priority keepalived gets for a load balancer without one (the original's default).
DEFAULT_PRIORITY = 10
# rankPriorities: the highest configured priority becomes TOP_PRIORITY, each lower one RANK_STEP
# less. 255 is reserved for the address owner. A step of 20 keeps the backups' skews 8 ms apart
# at advertInt 0.1, more than the scheduling jitter of a loaded node, so two backups never
# time out together.
TOP_PRIORITY = 254
RANK_STEP = 20


class VrrpSettings(BaseModel):
    """How keepalived elects the VIP holder: a profile, and any of its keys set explicitly."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True, json_schema_extra=lambda schema: schema.pop("required", None))

    profile: Profile = Field(DEFAULT_PROFILE, description=(
        "Defaults for every other key: `fast` (advertInt 0.1, HAProxy tracked by events, real-time "
        "keepalived, nopreempt) or `standard` (advertInt 0.5, preempt). Keys set here win."))
    advert_int: float = Field(ge=0.01, le=255, description=(
        "Seconds between VRRP adverts. A crashed holder is replaced after about 3 x advertInt. "
        "Fractions need VRRPv3, which is then configured automatically."))
    unicast: bool = Field(description=(
        "Send adverts to the other load balancers' IPs (unicast_peer) instead of multicast 224.0.0.18."))
    preempt: bool = Field(description=(
        "A returning higher-priority instance takes the VIP back. false = nopreempt: the VIP stays."))
    check_interval: int = Field(ge=1, le=60, description=(
        "Whole seconds between checks of the local HAProxy health endpoint (keepalived 2.2 "
        "rejects fractions here)."))
    check_fall: int = Field(ge=1, le=20, description=(
        "Failed checks in a row before the instance gives up the VIP (FAULT)."))
    check_rise: int = Field(ge=1, le=20, description=(
        "Successful checks in a row before a FAULT instance may hold the VIP again."))
    track_haproxy_exit: bool = Field(description=(
        "Give up the VIP the moment HAProxy exits (systemd's notice through a tracked file, and "
        "kernel process events where the node delivers them), not at the next health check."))
    realtime: bool = Field(description=(
        "Run keepalived's VRRP process with real-time scheduling (and locked in memory where the "
        "node allows it), so CPU load cannot delay its adverts into a false takeover."))
    rank_priorities: bool = Field(description=(
        "Write the load balancers' priorities as 254, 234, 214, ... in the order the config gives "
        "(equal stays equal): VRRP compares only the order, and a high backup priority shortens "
        "its takeover skew."))

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Fill every key the config leaves out from the chosen profile (explicit keys win)."""
        if not isinstance(data, dict):
            return data
        profile = data.get("profile", DEFAULT_PROFILE)
        # An unknown profile is reported by the Literal alone: fill from the default one so the
        # user sees that one error, not one "missing" per key.
        defaults = PROFILES.get(profile, PROFILES[DEFAULT_PROFILE]) if isinstance(profile, str) \
            else PROFILES[DEFAULT_PROFILE]
        filled = dict(data)
        for name, value in defaults.items():
            alias = to_camel(name)
            if name not in filled and alias not in filled:
                filled[alias] = value
        return filled

    @field_validator("advert_int")
    @classmethod
    def _centiseconds(cls, value: float) -> float:
        """VRRPv3 carries the interval in centiseconds: reject what keepalived would round."""
        if abs(round(value * 100) - value * 100) > 1e-6:
            raise ValueError("advertInt must be a multiple of 0.01 s (VRRPv3 centiseconds)")
        return value

    @property
    def vrrp_version(self) -> int:
        """VRRPv2 (keepalived's default) for whole seconds, VRRPv3 for fractional intervals."""
        return 2 if float(self.advert_int).is_integer() else 3

    def explicit(self) -> dict[str, Any]:
        """The keys that differ from the profile's defaults (what the user changed)."""
        base = PROFILES[self.profile]
        return {k: getattr(self, k) for k in base if getattr(self, k) != base[k]}


def profile_defaults(profile: str) -> VrrpSettings:
    """The settings a profile gives when nothing else is set."""
    return VrrpSettings(profile=profile)


def ranked_priorities(configured: dict[str, int | None], settings: VrrpSettings) -> dict[str, int]:
    """keepalived priority per load balancer: the configured one (default 10), or its rank.

    Ranking keeps every comparison VRRP makes (higher wins, equal stays equal, so the IP
    tie-break and preempt behave the same) and only moves the numbers up, which shrinks the skew
    a backup waits before it takes over.
    """
    plain = {name: DEFAULT_PRIORITY if p is None else int(p) for name, p in configured.items()}
    if not settings.rank_priorities:
        return plain
    levels = sorted(set(plain.values()), reverse=True)
    rank = {p: max(1, TOP_PRIORITY - RANK_STEP * i) for i, p in enumerate(levels)}
    return {name: rank[p] for name, p in plain.items()}


EXTENSION_PATH = "cluster.nodes.loadBalancer"
EXTENSION_KEY = "vrrp"
EXTENSION_ID = f"{EXTENSION_PATH}.{EXTENSION_KEY}"


def settings_from(value: object) -> VrrpSettings:
    """Accept what the engine stores for the extension (model, dict or nothing) as VrrpSettings."""
    if value is None:
        return VrrpSettings()
    if isinstance(value, VrrpSettings):
        return value
    if isinstance(value, BaseModel):
        return VrrpSettings.model_validate(value.model_dump(by_alias=True))
    return VrrpSettings.model_validate(value)
