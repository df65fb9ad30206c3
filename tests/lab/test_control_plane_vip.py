"""Lab tier: the control-plane-vip load balancer passes the conformance suite and its failover
matrix on real keepalived + HAProxy, with no load balancer machines.

Two masters and a worker are systemd-nspawn containers made by the nspawn provider, on a bridge
inside a private lab namespace the test thread enters. Each master runs a stand-in API server on
6443 (a TEST DOUBLE of kube-apiserver, which needs the internet: TLS, GET /readyz -> 200, under
systemd with Restart=always, as kubelet restarts a crashed static pod); the control-plane-vip
plugin's own apply puts HAProxy (on 8443, in front of both API servers) and keepalived (the VIP)
on both masters. The worker is the vantage point clients are probed from. The verify stage then
runs what the engine would: the generic suite (one endpoint answers at the recorded port, one VIP
holder, the link cut) and this package's own modules (daemons, configs, the keepalived faults and
the masters' own case: the holder's API server killed).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from dataclasses import replace
from types import SimpleNamespace

import nodes_lab
import pytest
import sshd_lab
from nodes_lab import conformance_registry, lab_context, lb_config, start_standin_api
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core.contracts import StageContext
from kubitect_core.failover import readyz
from kubitect_core.stage import StageError
from kubitect_core.topology import Node, Topology, as_built, recorded_nodes

pytestmark = pytest.mark.lab

NET = "10.88.0"
VIP = f"{NET}.200"
VRRP_ID = "cluster.nodes.loadBalancer.vrrp"
CASES = {"keepalived_stopped", "haproxy_killed", "keepalived_crashed", "link_cut", "holder_back", "apiserver_stopped"}


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs("openssl", "ssh")


def _topology(cluster: str) -> Topology:
    """master-1 (.10), master-2 (.11), worker-1 (.20); no load balancer instances; the VIP is .200."""
    def node(role, nid, ip):
        return Node(role=role, id=nid, name=f"{cluster}-{role}-{nid}", host="localhost", ip=ip, mac=None,
                    cpu=1, ram_gib=1, main_disk_gib=10)

    return Topology(cluster=cluster, nodes=(node("master", "1", f"{NET}.10"), node("master", "2", f"{NET}.11"),
                                            node("worker", "1", f"{NET}.20")),
                    vip=VIP, endpoint=VIP, virtual_router_id=88)


def test_control_plane_vip_passes_the_conformance_suite_and_its_failover_matrix(tmp_path, rootfs, monkeypatch):
    from kubitect_plugins.keepalived_haproxy import ControlPlaneVip, VrrpSettings, kubitect_nodes_leaving
    from kubitect_plugins.keepalived_haproxy.leaving import _RUNTIME, ADMIN_SOCKET, BACKEND
    from kubitect_plugins.nspawn import NspawnProvider

    from kubitect_core.verify import run_conformance

    with sshd_lab.lab_netns("kbt9-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt9-{ns[-6:]}"
        base = lab_context(tmp_path / "home", cluster, lb_config(NET), _topology(cluster), nspawn_rootfs=str(rootfs))
        cdir = base.cluster_dir
        provider, plugin = NspawnProvider(), ControlPlaneVip()
        records: dict = {"network": {}, "storage": {}, "vms": {}}
        lb_record: dict = {}
        settings = VrrpSettings()
        lb_ctx = replace(base, record=lb_record, extensions={VRRP_ID: settings})
        masters = base.topology.masters
        progress: list[tuple[str, str]] = []
        out: dict = {}

        def verify_ctx(record: dict) -> StageContext:
            vms = {"nspawn": records["vms"]}  # as the engine hands it to the verify stage
            return replace(base, topology=as_built(base.topology, recorded_nodes(vms)), record=record,
                           facts={"vms": vms, "loadbalancers": lb_record}, extensions={VRRP_ID: settings},
                           options={}, progress=lambda s, m: progress.append((s, m)))

        async def scenario():
            for layer in ("network", "storage", "vms"):
                await getattr(provider, layer).apply(replace(base, record=records[layer]), ["localhost"])
            for m in masters:
                await start_standin_api(lb_ctx, m, tmp_path, "kbt9-standin", restart=True)
            await plugin.apply(lb_ctx)
            out["through_vip"] = await readyz(VIP, lb_record["port"], timeout=2)
            out["record"] = {}
            try:
                await run_conformance(verify_ctx(out["record"]), conformance_registry())
            except StageError as exc:  # judged below, after the report table is printed
                out["error"] = str(exc)
            out["report"] = json.loads((cdir / "reports" / "conformance.json").read_text())
            out["second"] = await plugin.apply(lb_ctx)
            # A master leaves (scale-in / replace): the VIP it holds is handed over, not lost.
            addrs = {m.name: await nodes_lab.ssh(lb_ctx, m.ip, "ip -4 -o addr show") for m in masters}
            holder = next(m for m in masters if f" {VIP}/" in addrs[m.name])
            other = next(m for m in masters if m is not holder)
            leave_cfg = SimpleNamespace(cluster=SimpleNamespace(nodes=SimpleNamespace(
                load_balancer=SimpleNamespace(implementation="control-plane-vip"))))
            leave_ctx = replace(lb_ctx, config=leave_cfg, progress=lambda s, m: progress.append((s, m)))
            out["leaving"], out["staying"] = holder.name, other.name
            out["leave_changes"] = await kubitect_nodes_leaving(leave_ctx, [holder], False)
            out["other_addrs"] = await nodes_lab.ssh(lb_ctx, other.ip, "ip -4 -o addr show")
            out["leaver_keepalived"] = await nodes_lab.ssh(lb_ctx, holder.ip, "systemctl is-active keepalived")
            out["drain"] = await nodes_lab.ssh(lb_ctx, other.ip, _RUNTIME.format(
                socket=ADMIN_SOCKET, command=shlex.quote(f"show servers state {BACKEND}")))
            out["through_vip_after"] = await readyz(VIP, lb_record["port"], timeout=2)

        with entered_netns(ns):
            try:
                asyncio.run(scenario())
            finally:
                for layer in ("vms", "storage", "network"):
                    asyncio.run(getattr(provider, layer).destroy(replace(base, record=records[layer]), ["localhost"]))

    report = out["report"]
    table = next(m for s, m in progress if s == "report")
    print("\n" + table, file=sys.stderr)
    for r in report["failover"]:
        print(f"  {r['case']}: gap {r['gap_ms']} ms of {r['budget_ms']} ms ({r['budget_formula']}); "
              f"{r.get('outages')} outage(s), {r.get('total_outage_ms')} ms in all; takeover {r.get('takeover_ms')} ms",
              file=sys.stderr)
    assert "error" not in out, out.get("error")
    names = {m.name for m in masters}
    assert (lb_record["endpoint"], lb_record["port"], lb_record["implementation"]) == (VIP, 8443, "control-plane-vip")
    assert set(lb_record["nodes"]) == names, "HAProxy and keepalived run on the masters, nowhere else"
    assert out["through_vip"][0], f"the API through {VIP}:8443: {out['through_vip']}"
    outcomes = {c["name"]: c["outcome"] for c in report["cases"]}
    assert report["failed"] == 0, [c for c in report["cases"] if c["outcome"] == "failed"]
    for m in masters:  # the package's own checks ran on the masters, the nodes that serve the endpoint
        assert outcomes[f"test_load_balancer_services_are_active_and_enabled[{m.name}]"] == "passed"
        assert outcomes[f"test_load_balancer_configs_are_valid[{m.name}]"] == "passed"
    for check in ("test_exactly_one_vip_holder", "test_api_answers_through_the_endpoint",
                  "test_vip_is_answered_by_a_load_balancer_of_this_cluster"):
        assert outcomes[check] == "passed", (check, outcomes.get(check))
    rows = {r["case"]: r for r in report["failover"]}
    assert set(rows) == CASES, sorted(rows)
    for row in rows.values():
        assert row["result"] == "passed", row
        assert row["gap_ms"] is not None and row["gap_ms"] <= row["budget_ms"], row
        assert row["vantage"] == f"{cluster}-worker-1", row
        assert row["holder_after"] in names, row
        assert "8443" in row["target"], row  # measured through the endpoint's own port
    # the masters' own case: the holder's API server gone, the VIP stays, HAProxy routes around it
    assert rows["apiserver_stopped"]["holder_after"] == rows["apiserver_stopped"]["holder_before"]
    # a lost holder is a lost backend too: the declared budget says so
    assert "HAProxy marks the lost master down" in rows["link_cut"]["budget_formula"]
    gaps = {case: (r["gap_ms"], r["budget_ms"]) for case, r in sorted(rows.items())}
    print(f"\ncontrol-plane-vip gaps (ms, budget): {gaps}", file=sys.stderr)
    assert {c.action for c in out["second"]} == {"keep"}, [c for c in out["second"] if c.action != "keep"]
    # the leaving VIP holder: drained in the staying master's HAProxy, keepalived stopped, VIP moved
    leaving, staying = out["leaving"], out["staying"]
    assert [(c.kind, c.name) for c in out["leave_changes"]] == [("backend", leaving), ("service", "keepalived")]
    assert out["leaver_keepalived"] != "active", out["leaver_keepalived"]
    assert f" {VIP}/" in out["other_addrs"], f"the VIP did not move to {staying}: {out['other_addrs']}"
    server_line = next(line for line in out["drain"].splitlines() if f" {leaving} " in line)
    assert server_line.split()[6] == "8", f"{leaving} not in drain (srv_admin_state 8): {server_line}"
    assert out["through_vip_after"][0], f"the API through {VIP}:8443 after the handover: {out['through_vip_after']}"
