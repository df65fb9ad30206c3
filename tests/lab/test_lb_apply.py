"""Lab tier: the keepalived-haproxy plugin's plan/apply/destroy over SSH on systemd-nspawn nodes.

Two load balancers and one master are nspawn containers (real systemd, sshd, HAProxy and
keepalived from the cached rootfs) made by the nspawn provider on a bridge inside a private lab
namespace that the test thread enters. The master runs a stand-in API server (a test double for
kube-apiserver, which needs the internet: TLS, GET /readyz -> 200 + its name). The test thread is
the client: it probes the VIP in-process with kubitect_core.failover.
"""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

import nodes_lab
import pytest
import sshd_lab
from kubitect_plugins.keepalived_haproxy.budgets import expected_budget
from nodes_lab import lab_context, lb_config, lb_topology, start_standin_api
from nodes_lab import ssh as node_ssh
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core.contracts import StageContext
from kubitect_core.failover import DEFAULT_MARGIN_S, Prober, holder, readyz

pytestmark = pytest.mark.lab

NET = "10.89.0"
VIP = f"{NET}.200"
WHOAMI = 8405  # keepalived-haproxy's whoami frontend (Layout.whoami_port)
DROPIN = "/etc/systemd/system/haproxy.service.d/50-kubitect-exit.conf"
RT_DROPIN = "/etc/systemd/system/keepalived.service.d/50-kubitect-realtime.conf"
MANAGED = ("/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf", "/etc/keepalived/check_haproxy.sh",
           "/etc/sysctl.d/90-kubitect-loadbalancer.conf", DROPIN, RT_DROPIN)


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs("openssl")


async def _service_pids(ctx: StageContext, lbs) -> dict[str, str]:
    out = {}
    for lb in lbs:
        out[lb.name] = await node_ssh(ctx, lb.ip, "systemctl show -p MainPID --value haproxy keepalived | tr '\\n' ' '")
    return out


async def _holders(ctx: StageContext, lbs) -> list[str]:
    return [lb.name for lb in lbs if f"{VIP}/32" in await node_ssh(ctx, lb.ip, "ip -4 -o addr show")]


async def _wait_holder(ctx: StageContext, lbs, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await holder(VIP, WHOAMI) == name and await _holders(ctx, lbs) == [name]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} never became the only VIP holder: {await _holders(ctx, lbs)}")


def test_apply_converges_load_balancers_and_a_second_run_restarts_nothing(tmp_path, rootfs, monkeypatch):
    from kubitect_plugins.keepalived_haproxy import KeepalivedHaproxy, VrrpSettings
    from kubitect_plugins.nspawn import NspawnProvider
    from kubitect_plugins.nspawn.settings import ROOTFS_ENV  # noqa: F401  (the provider reads options)

    with sshd_lab.lab_netns("kbt4-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt4-{ns[-6:]}"
        base = lab_context(tmp_path / "home", cluster, lb_config(NET), lb_topology(cluster, NET, 89),
                           nspawn_rootfs=str(rootfs))
        provider, plugin = NspawnProvider(), KeepalivedHaproxy()
        records = {"network": {}, "storage": {}, "vms": {}}
        lb_record: dict = {}

        def ctx_for(layer: str) -> StageContext:
            return replace(base, record=records[layer])

        lb_ctx = replace(base, record=lb_record)
        lbs = base.topology.load_balancers
        settings = VrrpSettings()
        out: dict = {}

        async def scenario():
            for layer in ("network", "storage", "vms"):
                await getattr(provider, layer).apply(ctx_for(layer), ["localhost"])
            await start_standin_api(lb_ctx, base.topology.masters[0], tmp_path, "kbt4-standin")
            out["plan_before"] = await plugin.plan(lb_ctx)
            out["first"] = await plugin.apply(lb_ctx)
            out["record"] = copy.deepcopy(lb_record)
            await _wait_holder(lb_ctx, lbs, lbs[0].name)
            out["through_vip"] = await readyz(VIP, timeout=2)
            out["pids"] = await _service_pids(lb_ctx, lbs)
            out["second"] = await plugin.apply(lb_ctx)
            out["plan_after"] = await plugin.plan(lb_ctx)
            out["pids_after"] = await _service_pids(lb_ctx, lbs)
            out["sysctl"] = await node_ssh(lb_ctx, lbs[1].ip, "sysctl -n net.ipv4.ip_nonlocal_bind; "
                                                              "cat /etc/sysctl.d/90-kubitect-loadbalancer.conf")
            # a real failover on real systemd: stop keepalived on the holder
            async with Prober(VIP) as prober:
                await prober.wait_ready()
                prober.mark()
                await node_ssh(lb_ctx, lbs[0].ip, "systemctl stop keepalived")
                out["failover"] = await prober.wait_recovered(15, quiet=3)
            out["holder_after_stop"] = await holder(VIP, WHOAMI)
            out["heal"] = await plugin.apply(lb_ctx)  # keepalived is started again
            await asyncio.sleep(1.0)  # long enough for a preempting instance to take the VIP back
            await _wait_holder(lb_ctx, lbs, lbs[1].name)  # the fast profile: nopreempt, it stays
            out["rt"] = await node_ssh(lb_ctx, lbs[0].ip, "ps -o cls=,rtprio= -p $(pgrep -d, -x keepalived)")
            out["exit_file"] = await node_ssh(lb_ctx, lbs[0].ip, "cat /run/kubitect-haproxy.down")
            # a config change is validated, uploaded and reloaded, not restarted
            http = SimpleNamespace(name="http", port=8080, target_port=None, target="masters")
            changed_ctx = replace(lb_ctx, config=lb_config(NET, [http]))
            out["pids_before_change"] = await _service_pids(lb_ctx, lbs)
            out["changed"] = await plugin.apply(changed_ctx)
            out["pids_after_change"] = await _service_pids(lb_ctx, lbs)
            out["destroyed"] = await plugin.destroy(changed_ctx)
            out["after_destroy"] = await node_ssh(lb_ctx, lbs[0].ip, "systemctl is-active haproxy keepalived; "
                                                                     f"ls {' '.join(MANAGED)} 2>/dev/null")

        with entered_netns(ns):
            try:
                asyncio.run(scenario())
            finally:
                for layer in ("vms", "storage", "network"):
                    asyncio.run(getattr(provider, layer).destroy(ctx_for(layer), ["localhost"]))

    def actions(changes, kind=None):
        return {(c.kind, c.name, c.host, c.action) for c in changes if kind is None or c.kind == kind}

    lb1, lb2 = (lb.name for lb in lbs)
    first = out["first"]
    # haproxy.cfg replaces the package's default ("change"); the keepalived files are new
    assert {(c.name, c.action) for c in first if c.kind == "file" and c.host == lb1} == {
        ("/etc/haproxy/haproxy.cfg", "change"), ("/etc/keepalived/keepalived.conf", "create"),
        ("/etc/keepalived/check_haproxy.sh", "create"), (DROPIN, "create"), (RT_DROPIN, "create")}
    assert {(c.name, c.host, c.action) for c in first if c.kind == "service"} == {
        (s, n, "create") for s in ("haproxy", "keepalived") for n in (lb1, lb2)}
    assert {c.action for c in out["plan_before"] if c.kind == "file"} == {"create", "change"}
    assert {c.action for c in out["plan_before"] if c.kind == "service"} == {"create"}, "plan started nothing"
    record = out["record"]
    assert record["endpoint"] == VIP and record["vip"] == VIP
    assert set(record["nodes"]) == {lb1, lb2} and all(len(h) == 5 for h in
                                                          (n["hashes"] for n in record["nodes"].values()))
    # the default (fast) profile, as far as an nspawn node allows: no process events in its
    # network namespace (HAProxy's exit comes from systemd instead), real-time scheduling allowed
    assert record["vrrp"] == {"profile": "fast", "advert_int": 0.1, "priorities": {lb1: 254, lb2: 234}}
    features = record["nodes"][lb1]["features"]
    assert (features["process_events"], features["realtime"], features["virt"]) == (False, True, "systemd-nspawn")
    assert record["nodes"][lb1]["warnings"] == []
    assert out["through_vip"] == (True, base.topology.masters[0].name), "the client reaches the master via the VIP"
    assert {c.action for c in out["second"]} == {"keep"}, [c for c in actions(out["second"]) if c[3] != "keep"]
    assert {c.action for c in out["plan_after"]} == {"keep"}, actions(out["plan_after"])
    assert out["pids_after"] == out["pids"], "a second apply restarts nothing"
    assert out["sysctl"].startswith("1\n") and "net.ipv4.ip_nonlocal_bind = 1" in out["sysctl"]
    fo = out["failover"]
    budget = expected_budget(settings, backup_priority=record["vrrp"]["priorities"][lb2],
                             margin_s=DEFAULT_MARGIN_S)["keepalived_stopped"]
    print(f"\nnspawn failover (systemctl stop keepalived): gap {fo.gap_ms:.1f} ms (budget {budget} ms)",
          file=sys.stderr)
    assert fo.recovered and fo.gap_ms <= budget
    assert out["holder_after_stop"] == lb2
    assert ("service", "keepalived", lb1, "create") in actions(out["heal"])
    assert out["rt"].split() == ["RR", "50", "RR", "50"], f"keepalived runs SCHED_RR 50: {out['rt']!r}"
    assert out["exit_file"] == "0", "HAProxy runs: the tracked file says so"
    changed = actions(out["changed"])
    assert ("file", "/etc/haproxy/haproxy.cfg", lb1, "change") in changed
    assert ("service", "haproxy", lb1, "change") in changed and ("service", "keepalived", lb1, "keep") in changed
    assert out["pids_after_change"] == out["pids_before_change"], "a reload keeps the service's main PID"
    assert {c.host for c in out["destroyed"]} == {lb1, lb2} and lb_record == {}
    assert "active" not in out["after_destroy"].replace("inactive", "")
    assert not [f for f in MANAGED if f in out["after_destroy"]], out["after_destroy"]
