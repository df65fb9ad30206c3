"""Conformance checks of the keepalived-haproxy implementation, contributed to the verify stage
through the `kubitect_conformance_modules` hook (see `__init__.py`).

The generic suite (`kubitect_conformance`) checks what any load balancer must do: the API answers
through the endpoint, one holder of the VIP. What only this package's implementations have is
checked here, on the nodes that serve the endpoint (the load balancers, or the masters with
control-plane-vip): the daemons run and start at boot, and the configs written are valid for them.

The fixtures (`lb`, `kubitect_inventory`) come by name from the generic suite; see
`kubitect_core.sdk.conformance`. This module imports nothing of its plugin, so it runs under
whatever module name pytest gives it.
"""

from __future__ import annotations

import pytest

from kubitect_core.sdk.conformance import lb_facts

IMPLEMENTATIONS = ("keepalived-haproxy", "control-plane-vip")
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"


@pytest.fixture(autouse=True)
def _ours(kubitect_inventory):
    """This package's checks apply only when one of its implementations serves the endpoint."""
    implementation = lb_facts(kubitect_inventory).get("implementation", "keepalived-haproxy")
    if implementation not in IMPLEMENTATIONS:
        pytest.skip(f"the load balancer is {implementation}, not keepalived + HAProxy")


def _services(inventory) -> list[str]:
    return ["haproxy", "keepalived"] if inventory.get("vip") else ["haproxy"]


def test_load_balancer_services_are_active_and_enabled(lb, kubitect_inventory):
    problems = []
    for svc in _services(kubitect_inventory):
        state = lb.run(f"systemctl is-active {svc}").stdout.strip()
        enabled = lb.run(f"systemctl is-enabled {svc}").stdout.strip()
        if state != "active":
            problems.append(f"{svc} is {state or 'unknown'}, not active")
        if enabled != "enabled":
            problems.append(f"{svc} is {enabled or 'unknown'} at boot, not enabled")
    assert not problems, f"load balancer {lb.name}: " + "; ".join(problems)


def test_load_balancer_configs_are_valid(lb, kubitect_inventory):
    res = lb.root(f"haproxy -c -q -f {HAPROXY_CFG}")
    assert res.rc == 0, f"load balancer {lb.name}: {HAPROXY_CFG} is invalid: {(res.stderr or res.stdout).strip()}"
    if kubitect_inventory.get("vip"):
        res = lb.root(f"keepalived -t -f {KEEPALIVED_CONF}")
        assert res.rc == 0, (f"load balancer {lb.name}: {KEEPALIVED_CONF} is invalid: "
                             f"{(res.stderr or res.stdout).strip()[-800:]}")
