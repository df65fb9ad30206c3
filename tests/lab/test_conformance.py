"""Lab tier: the verify stage's conformance suite and failover matrix against real keepalived + HAProxy.

Two load balancers and a master are systemd-nspawn containers made by the nspawn provider, on a
bridge inside a private lab namespace the test thread enters (so the verify stage's child pytest,
its ssh processes and the prober all live there). The keepalived-haproxy plugin's own apply
configures the load balancers. The master runs a stand-in API server (a TEST DOUBLE of
kube-apiserver, which needs the internet: TLS, GET /readyz -> 200) and is the vantage point the
prober measures from. Then the cluster is broken on purpose, twice, and the suite must say why.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace

import nodes_lab
import pytest
import sshd_lab
from nodes_lab import conformance_registry, lab_context, lb_config, lb_topology, start_standin_api
from nodes_lab import ssh as node_ssh
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core.contracts import StageContext
from kubitect_core.stage import StageError
from kubitect_core.topology import DataDisk, as_built, recorded_nodes

pytestmark = pytest.mark.lab

NET = "10.87.0"
VIP = f"{NET}.200"
VRRP_ID = "cluster.nodes.loadBalancer.vrrp"


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs("openssl", "ssh")


def test_conformance_and_failover_matrix_on_nspawn_nodes(tmp_path, rootfs, monkeypatch):
    from kubitect_plugins.keepalived_haproxy import KeepalivedHaproxy, VrrpSettings
    from kubitect_plugins.nspawn import NspawnProvider

    from kubitect_core.verify import run_conformance

    with sshd_lab.lab_netns("kbt7-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt7-{ns[-6:]}"
        topology = lb_topology(cluster, NET, 87, master_disks=(DataDisk("data", "main", 1),))
        base = lab_context(tmp_path / "home", cluster, lb_config(NET), topology, nspawn_rootfs=str(rootfs))
        cdir = base.cluster_dir
        provider, plugin = NspawnProvider(), KeepalivedHaproxy()
        records: dict = {"network": {}, "storage": {}, "vms": {}}
        lb_record: dict = {}
        settings = VrrpSettings()
        lb_ctx = replace(base, record=lb_record, extensions={VRRP_ID: settings})
        lbs = base.topology.load_balancers
        progress: list[tuple[str, str]] = []
        out: dict = {}

        def verify_ctx(record: dict, vrrp=settings, **options) -> StageContext:
            vms = {"nspawn": records["vms"]}  # as the engine hands it to the verify stage
            return replace(base, topology=as_built(base.topology, recorded_nodes(vms)), record=record,
                           facts={"vms": vms, "loadbalancers": lb_record},
                           extensions={VRRP_ID: vrrp}, options=options,
                           progress=lambda s, m: progress.append((s, m)))

        async def scenario():
            for layer in ("network", "storage", "vms"):
                await getattr(provider, layer).apply(replace(base, record=records[layer]), ["localhost"])
            await start_standin_api(lb_ctx, base.topology.masters[0], tmp_path, "kbt7-standin")
            await plugin.apply(lb_ctx)
            # 1. the healthy cluster: every check and the whole failover matrix pass
            out["record"] = {}
            await run_conformance(verify_ctx(out["record"], junit=str(tmp_path / "junit.xml")), conformance_registry())
            out["report"] = json.loads((cdir / "reports" / "conformance.json").read_text())
            # 2. no API server behind the VIP yet (as before the kubernetes stage): the endpoint check
            #    is skipped with the reason and the matrix measures through HAProxy's whoami frontend
            await node_ssh(lb_ctx, base.topology.masters[0].ip, "systemctl stop standin-api")
            await run_conformance(verify_ctx({}, checks="api_answers or keepalived_stopped"), conformance_registry())
            out["no_api_report"] = json.loads((cdir / "reports" / "conformance.json").read_text())
            # 3. preempt set explicitly (re-applied by the plugin): the higher-priority old holder comes
            #    back and takes the VIP back
            preempt = settings.model_copy(update={"preempt": True})
            await plugin.apply(replace(lb_ctx, extensions={VRRP_ID: preempt}))
            await run_conformance(verify_ctx({}, vrrp=preempt, checks="holder_back"), conformance_registry())
            out["preempt_report"] = json.loads((cdir / "reports" / "conformance.json").read_text())
            nopreempt = preempt.model_copy(update={"preempt": False})
            # 4. broken on purpose: a second holder of the VIP (the backup claims the address too)
            addrs = [await node_ssh(lb_ctx, lb.ip, "ip -4 -o addr show dev host0") for lb in lbs]
            other = next(lb for lb, a in zip(lbs, addrs, strict=True) if f" {VIP}/" not in a)
            await node_ssh(lb_ctx, other.ip, f"ip addr add {VIP}/32 dev host0")
            try:
                await run_conformance(verify_ctx({}, failover=False, checks="exactly_one_vip_holder"),
                                      conformance_registry())
            except StageError as exc:
                out["two_holders"] = str(exc)
            await node_ssh(lb_ctx, other.ip, f"ip addr del {VIP}/32 dev host0")
            # 5. broken on purpose: keepalived no longer tracks HAProxy (its check and its exit removed)
            await plugin.apply(replace(lb_ctx, extensions={VRRP_ID: nopreempt}))
            for lb in lbs:
                await node_ssh(lb_ctx, lb.ip, "sed -i '/track_script {/,/}/d; /    track_file {/,/}/d' "
                                              "/etc/keepalived/keepalived.conf && systemctl reload keepalived")
            try:
                await run_conformance(verify_ctx({}, vrrp=nopreempt, checks="haproxy_killed"), conformance_registry())
            except StageError as exc:
                out["untracked"] = str(exc)
            out["untracked_report"] = json.loads((cdir / "reports" / "conformance.json").read_text())

        with entered_netns(ns):
            try:
                asyncio.run(scenario())
            finally:
                for layer in ("vms", "storage", "network"):
                    asyncio.run(getattr(provider, layer).destroy(replace(base, record=records[layer]), ["localhost"]))

    report = out["report"]
    table = next(m for s, m in progress if s == "report")
    print("\n" + table, file=sys.stderr)
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    assert report["failed"] == 0, [c for c in report["cases"] if c["outcome"] == "failed"]
    names = " ".join(outcomes)
    for check in ("test_node_is_reachable_over_ssh", "test_node_identity_is_as_configured",
                  "test_data_disk_is_present_at_its_size", "test_load_balancer_services_are_active_and_enabled",
                  "test_load_balancer_configs_are_valid", "test_exactly_one_vip_holder",
                  "test_api_answers_through_the_endpoint"):
        assert check in names
    assert outcomes[f"test_data_disk_is_present_at_its_size[{cluster}-master-1:data]"] == "passed"
    assert outcomes[f"test_node_identity_is_as_configured[{cluster}-lb-2]"] == "passed"
    assert {c["outcome"] for c in report["cases"] if "test_kubernetes" in (c["module"] or "")} == {"skipped"}
    rows = {r["case"]: r for r in report["failover"]}
    assert set(rows) == {"keepalived_stopped", "haproxy_killed", "keepalived_crashed", "link_cut", "holder_back"}
    for row in rows.values():
        assert row["result"] == "passed", row
        assert row["gap_ms"] is not None and row["gap_ms"] <= row["budget_ms"], row
        assert row["vantage"] == f"{cluster}-master-1"
    assert {r["holder_after"] for r in rows.values()} <= {lbs[0].name, lbs[1].name}
    # the default (fast) profile is nopreempt: the VIP stays where it went when the old holder is back
    assert rows["holder_back"]["holder_after"] == rows["holder_back"]["holder_before"]
    # budgets follow the fast timers (advert 0.1 s, HAProxy's exit by event, ranked priorities)
    assert rows["link_cut"]["budget_ms"] < 1000 and rows["haproxy_killed"]["budget_ms"] < 700, rows
    assert out["record"]["failover"]["link_cut"]["gap_ms"] == rows["link_cut"]["gap_ms"]
    assert "VIP failover" in table and "keepalived_crashed" in table
    assert (tmp_path / "junit.xml").read_text().count('name="gap_ms"') == 5
    no_api = out["no_api_report"]
    assert [c["outcome"] for c in no_api["cases"] if "api_answers" in c["name"]] == ["skipped"]
    assert "Kubernetes is not installed" in next(c["message"] for c in no_api["cases"] if "api_answers" in c["name"])
    (whoami,) = no_api["failover"]
    assert whoami["result"] == "passed" and "whoami" in whoami["target"] and whoami["gap_ms"] <= whoami["budget_ms"]
    print(f"\nwithout an API server (probe: whoami): keepalived_stopped gap {whoami['gap_ms']} ms", file=sys.stderr)
    (back,) = out["preempt_report"]["failover"]
    assert back["result"] == "passed" and back["holder_after"] == lbs[0].name, back  # preempt: the higher priority
    print(f"preempt holder_back: gap {back['gap_ms']} ms, VIP back on {back['holder_after']}", file=sys.stderr)
    print(f"two holders -> {out['two_holders']}\nuntracked HAProxy -> {out['untracked']}", file=sys.stderr)
    # the broken clusters fail, and the message names the cause
    assert "two VIP holders (split brain)" in out["two_holders"], out["two_holders"]
    assert lbs[0].name in out["two_holders"] and lbs[1].name in out["two_holders"]
    assert "test_failover_b_haproxy_killed" in out["untracked"]
    assert "does not track HAProxy" in out["untracked"], out["untracked"]
    untracked = out["untracked_report"]["failover"]
    assert [r["case"] for r in untracked] == ["haproxy_killed"] and untracked[0]["result"] == "failed"
