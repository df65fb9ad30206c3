"""The VRRP settings extension: `cluster.nodes.loadBalancer.vrrp` (keys the original cannot set).

An original Kubitect config has no `vrrp` key; the defaults below then apply. They were chosen
from failover measurements in the namespace lab (bench/lb_failover_bench.py, reusing
tests/lab/lb_lab.py; keepalived 2.2.7, HAProxy 2.6, two load balancers with priorities 200/100,
three stand-in API servers, a prober sending a TLS `GET /readyz` through VIP:6443 every 20 ms from
a client namespace). Gap = first failed request to the first successful one after it, in ms,
min / median / max over 5 runs on a 2-core machine; check interval 1 s, fall 1, weight 0:

| fault on the VIP holder              | advertInt 1 (VRRPv2) | advertInt 0.5 (default) | advertInt 0.2  |
|--------------------------------------|----------------------|-------------------------|----------------|
| keepalived stopped (SIGTERM)         | 632 / 642 / 669      | 301 / 322 / 324         | 144 / 145 / 167|
| HAProxy killed (SIGKILL)             | 828 / 897 / 1451     | 324 / 1267 / 1274       | 891 / 1017 / 1047|
| keepalived crashed (group SIGKILL)   | 0 / 0 / 22           | 0 / 0 / 23              | 0 / 0 / 26     |
| link cut (switch port down)          | 2903 / 3046 / 3185   | 1344 / 1454 / 1825      | 567 / 594 / 753|

A crashed keepalived leaves the VIP address on the old holder, whose HAProxy still serves, so
clients see (almost) nothing while the backup takes over; the link cut is the "holder is gone"
case and follows Master_Down_Interval = 3 x advertInt + skew. The HAProxy case is bounded by the
check interval (keepalived 2.2 takes whole seconds only) plus the backup's skew, so it hardly
improves below advertInt 0.5.

Why these defaults:

- `advertInt` 0.5 s (VRRPv3, since VRRPv2 only allows whole seconds): a crashed or cut-off
  holder costs 3 x 0.5 + skew (1.3-1.8 s measured) instead of the original's ~3.6 s, while a loaded VM still
  has 1.5 s of missed adverts before a false takeover ("thread timer expired" on overcommitted
  hosts is the known cause of flapping at very low intervals, peers-and-failover.md 5.1).
- `unicast` true: many networks (clouds, some bridges with nwfilters) drop multicast VRRP.
- `preempt` true: the original's meaning of `priority` (the highest-priority live instance holds
  the VIP). Set it false to avoid the second, shorter gap when a failed primary returns.
- `checkInterval` 1 s, `checkFall` 1, `checkRise` 2, weight 0: a failed HAProxy health check puts
  the instance into FAULT, which hands the VIP over at once (priority-0 advert) instead of waiting
  for a lower priority to lose an election (a negative weight measured ~3.4 s). The check asks
  HAProxy's own health endpoint on 127.0.0.1 (a refused connection fails in microseconds, so one
  failure is a real signal); rise 2 keeps a restarting HAProxy from flapping the VIP back.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class VrrpSettings(BaseModel):
    """How keepalived elects the VIP holder; every field has a measured default (module docstring)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)

    advert_int: float = Field(0.5, ge=0.01, le=255, description=(
        "Seconds between VRRP adverts. A crashed holder is replaced after about 3 x advertInt. "
        "Fractions need VRRPv3, which is then configured automatically."))
    unicast: bool = Field(True, description=(
        "Send adverts to the other load balancers' IPs (unicast_peer) instead of multicast 224.0.0.18."))
    preempt: bool = Field(True, description=(
        "A returning higher-priority instance takes the VIP back. false = nopreempt: the VIP stays."))
    check_interval: int = Field(1, ge=1, le=60, description=(
        "Whole seconds between checks of the local HAProxy health endpoint (keepalived 2.2 "
        "rejects fractions here)."))
    check_fall: int = Field(1, ge=1, le=20, description=(
        "Failed checks in a row before the instance gives up the VIP (FAULT)."))
    check_rise: int = Field(2, ge=1, le=20, description=(
        "Successful checks in a row before a FAULT instance may hold the VIP again."))

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
