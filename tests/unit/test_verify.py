"""Unit tier: the verify stage's plumbing (inventory, child pytest, JUnit -> report -> table), the
failover budgets, the Kubernetes judging functions and the suite's skip reasons, without a cluster.

The skip-reason tests run the real conformance modules in a child pytest against an inventory
with no reachable nodes: every check that needs a node must be skipped (with the reason) before
it tries to connect.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubitect_conformance import k8s
from kubitect_conformance.cluster import SshControl
from kubitect_conformance.plugin import kubitect_conformance_modules
from kubitect_conformance.vip import declared_budget
from kubitect_plugins.keepalived_haproxy import budgets as budgets_of
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings

from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.report import display_name, render_text
from kubitect_core.topology import DataDisk, Node, Topology, as_built, recorded_nodes
from kubitect_core.verify import build_report, inventory_nodes, parse_junit, pytest_argv, run_conformance

ROOT = Path(__file__).resolve().parents[2]
CONFORMANCE = ROOT / "conformance"

KEEPALIVED_FAILOVER = str(ROOT / "plugins" / "keepalived_haproxy" / "conformance_failover.py")

def budgets(settings, backup_priority: int, margin_s: float) -> dict:
    """What the suite holds each case to: the budgets keepalived-haproxy declares for a backup of
    this priority (recorded at apply), plus the margin."""
    declared = budgets_of.declared(settings, {"backup": backup_priority}, holder_is_backend=False)
    return {case: declared_budget(declared, case, margin_s) for case in declared["budgets"]}


def _node(role, nid, ip, host="h1", priority=None, disks=()):
    return Node(role=role, id=nid, name=f"c-{role}-{nid}", host=host, ip=ip, mac=None, cpu=1, ram_gib=1,
                main_disk_gib=10, data_disks=disks, priority=priority)


def _ctx(tmp_path: Path, lbs: int = 2, vip: str | None = "10.9.0.200", **options) -> StageContext:
    nodes = [_node("lb", str(i + 1), f"10.9.0.{5 + i}", priority=200 - i) for i in range(lbs)]
    nodes += [_node("master", "1", None, host="h2", disks=(DataDisk("data", "main", 2),))]
    topo = Topology(cluster="c", nodes=tuple(nodes), vip=vip, endpoint=vip or "", virtual_router_id=9)
    config = SimpleNamespace(hosts=[SimpleNamespace(name="h1", provider="nspawn"),
                                    SimpleNamespace(name="h2", provider="libvirt")])  # resolved
    ssh = SshAccess("k8s", tmp_path / "id", tmp_path / "id.pub", tmp_path / "known_hosts")
    facts = {"vms": {"libvirt": {"nodes": {"c-master-1": {"name": "c-master-1", "ip": "10.9.0.10",
                                                          "domain": "c-master-1"}}}}}
    # what the engine hands the verify stage: the as-built topology (the master's lease recorded)
    topo = as_built(topo, recorded_nodes(facts["vms"]))
    return StageContext(cluster="c", config=config, topology=topo, cluster_dir=tmp_path / "c", home=tmp_path,
                        ssh=ssh, record={}, facts=facts, options=options,
                        extensions={"cluster.nodes.loadBalancer.vrrp": VrrpSettings(advert_int=1)})


def test_inventory_lists_the_as_built_nodes_and_the_provider_from_the_host(tmp_path):
    nodes = {n["name"]: n for n in inventory_nodes(_ctx(tmp_path))}
    assert nodes["c-master-1"]["ip"] == "10.9.0.10"  # the lease in the as-built topology
    assert nodes["c-master-1"]["dhcp"] is True and nodes["c-master-1"]["domain"] == "c-master-1"
    assert nodes["c-lb-1"]["dhcp"] is False and nodes["c-lb-1"]["domain"] is None
    assert nodes["c-lb-1"]["provider"] == "nspawn" and nodes["c-master-1"]["provider"] == "libvirt"
    assert list(nodes["c-master-1"]["data_disks"]) == [{"name": "data", "pool": "main", "size_gib": 2}]


def test_child_pytest_command_line_follows_the_flags(tmp_path):
    ini = tmp_path / "conformance" / "pytest.ini"
    mods = kubitect_conformance_modules()
    argv = pytest_argv(_ctx(tmp_path, failover=False, failover_vantage="local", failover_margin=0.25),
                       mods, tmp_path / "j.xml", ini)
    assert ("-m", "not failover") in zip(argv, argv[1:], strict=False)
    assert "--failover-vantage=local" in argv and "--failover-margin=0.25" in argv
    assert "not failover" not in pytest_argv(_ctx(tmp_path), mods, tmp_path / "j.xml", ini)
    assert [Path(m).name for m in mods][-2:] == ["test_failover.py", "test_host_loss.py"], \
        "faults are injected after the plain checks, a whole host lost last"


def test_budgets_come_from_the_configured_timers():
    b = budgets(VrrpSettings(advert_int=1, check_interval=2, check_fall=3, track_haproxy_exit=False),
                backup_priority=100, margin_s=0.5)
    skew = (256 - 100) / 256  # VRRPv2 skew for priority 100
    assert b["keepalived_stopped"].ms == round((skew + 0.5) * 1000, 1)
    assert b["haproxy_killed"].ms == round((2 * 3 + skew + 0.5) * 1000, 1)
    assert b["keepalived_crashed"].ms == b["link_cut"].ms == round((3 * 1 + skew + 0.5) * 1000, 1)
    assert b["holder_back"].ms == 1500.0
    assert b["link_cut"].formula == "3 × 1 advert + 0.61 skew + 0.5 margin"
    fast = budgets(VrrpSettings(advert_int=0.2), backup_priority=100, margin_s=0.5)
    assert fast["link_cut"].ms < b["link_cut"].ms  # VRRPv3: skew scales with the advert interval
    # HAProxy's exit tracked by events (the default): the check interval no longer counts
    assert fast["haproxy_killed"].ms == round((0.1 + 156 / 256 * 0.2 + 0.5) * 1000, 1)
    assert fast["haproxy_killed"].formula.startswith("0.1 exit event + ")


def _junit_from_a_real_pytest_run(tmp_path: Path) -> Path:
    mod = tmp_path / "test_sample.py"
    mod.write_text(textwrap.dedent("""
        import pytest

        def test_gap(record_property):
            for k, v in {"failover_case": "link_cut", "budget_ms": 2305.0, "gap_ms": 1793.4,
                         "holder_before": "lb-1", "holder_after": "lb-2", "vantage": "m-1", "margin_ms": 500}.items():
                record_property(k, v)

        def test_unrecovered(record_property):
            record_property("failover_case", "haproxy_killed")
            record_property("budget_ms", 1805.0)
            record_property("gap_ms", "unrecovered")
            pytest.fail("haproxy_killed: keepalived does not track HAProxy")

        @pytest.mark.parametrize("node", ["lb-1"])
        def test_plain(node):
            pytest.skip("no data disks")
    """))
    junit = tmp_path / "j.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                    f"--junitxml={junit}", str(mod)], cwd=tmp_path, capture_output=True)
    return junit


def test_the_report_names_each_node_with_its_address_and_where_it_came_from(tmp_path):
    report = build_report("c", [], inventory_nodes(_ctx(tmp_path, lbs=1, vip=None)))
    assert report["nodes"] == [
        {"name": "c-lb-1", "role": "lb", "host": "h1", "domain": None, "ip": "10.9.0.5", "address": "config"},
        {"name": "c-master-1", "role": "master", "host": "h2", "domain": "c-master-1", "ip": "10.9.0.10",
         "address": "dhcp"}]
    rows = [line.split() for line in render_text(report).splitlines()]
    assert ["c-master-1", "master", "10.9.0.10", "DHCP", "lease", "h2"] in rows
    assert ["c-lb-1", "lb", "10.9.0.5", "config", "h1"] in rows


def test_measured_gaps_travel_from_junit_properties_to_the_report_and_table(tmp_path):
    report = build_report("c", parse_junit(_junit_from_a_real_pytest_run(tmp_path)))
    assert (report["passed"], report["failed"], report["skipped"]) == (1, 1, 1)
    rows = {r["case"]: r for r in report["failover"]}
    assert rows["link_cut"]["gap_ms"] == 1793.4 and rows["link_cut"]["budget_ms"] == 2305.0
    assert rows["link_cut"]["holder_after"] == "lb-2" and rows["link_cut"]["result"] == "passed"
    assert rows["haproxy_killed"]["gap_ms"] is None and rows["haproxy_killed"]["result"] == "failed"
    text = render_text(report)
    lines = text.splitlines()
    link = next(line for line in lines if line.startswith("link_cut"))
    assert link.split()[:3] == ["link_cut", "2305", "1793"] and "lb-1 -> lb-2" in link
    assert "no recovery" in next(line for line in lines if line.startswith("haproxy_killed"))
    assert "test_plain (lb-1)" in text and "[" not in text  # markup-safe for the terminal
    assert "from m-1" in text and "500 ms margin" in text


def test_display_name_keeps_the_parameter():
    assert display_name("test_x[lb-1]") == "test_x (lb-1)"
    assert display_name("test_y") == "test_y"


def test_ssh_config_pins_host_keys_and_shares_connections(tmp_path):
    inv = {"ssh": {"user": "k8s", "private_key": str(tmp_path / "id"), "known_hosts": str(tmp_path / "kh")},
           "nodes": [{"name": "c-lb-1", "ip": "10.9.0.5", "role": "lb"}]}
    control = SshControl(inv, tmp_path)
    try:
        text = control.config.read_text()
        assert "Host c-lb-1 10.9.0.5" in text and "StrictHostKeyChecking yes" in text
        assert f"UserKnownHostsFile {tmp_path / 'kh'}" in text and "GlobalKnownHostsFile /dev/null" in text
        assert f"ControlPath {control.control_dir}/%C" in text
        assert oct(control.config.stat().st_mode & 0o777) == "0o600"
    finally:
        control.close()
    assert not control.control_dir.exists()


def test_kubernetes_judges():
    nodes = {"items": [
        {"metadata": {"name": "m1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "w1"}, "status": {"conditions": [{"type": "Ready", "status": "False",
                                                                 "reason": "KubeletNotReady"}]}}]}
    assert k8s.not_ready_nodes(json.dumps(nodes)) == ["w1 (KubeletNotReady)"]
    assert k8s.missing_nodes(json.dumps(nodes), ["m1", "w1", "w2"]) == ["w2"]
    pods = {"items": [
        {"metadata": {"name": "coredns-1"}, "status": {"phase": "Running", "containerStatuses": [{"ready": True}]}},
        {"metadata": {"name": "kube-proxy-x"}, "status": {"phase": "Running", "containerStatuses": [{"ready": False}]}},
        {"metadata": {"name": "job-done"}, "status": {"phase": "Succeeded"}},
        {"metadata": {"name": "pending"}, "status": {"phase": "Pending"}}]}
    assert k8s.not_ready_pods(json.dumps(pods)) == ["kube-proxy-x (Running)", "pending (Pending)"]
    assert k8s.dns_answer_ok("rcode=0 answers=1") and not k8s.dns_answer_ok("rcode=3 answers=0")
    san = "X509v3 Subject Alternative Name:\n    DNS:kubernetes, IP Address:10.96.0.1, IP Address:10.9.0.200"
    assert k8s.certificate_ips(san) == ["10.96.0.1", "10.9.0.200"]
    assert k8s.kubectl_command({"installer": "k3s"}) == "k3s kubectl"
    assert "admin.conf" in k8s.kubectl_command({"installer": "kubeadm"})


def _stage_run(tmp_path, lbs, **options):
    ctx = _ctx(tmp_path, lbs=lbs, vip="10.9.0.200" if lbs else None, **options)
    progress: list[tuple[str, str]] = []
    ctx.progress = lambda s, m: progress.append((s, m))
    registry = SimpleNamespace(conformance_modules=lambda: [str(CONFORMANCE / "test_kubernetes.py"),
                                                            str(CONFORMANCE / "test_failover.py"), KEEPALIVED_FAILOVER])
    asyncio.run(run_conformance(ctx, registry))
    return json.loads((ctx.cluster_dir / "reports" / "conformance.json").read_text()), progress, ctx


def test_verify_stage_skips_what_cannot_apply_and_says_why(tmp_path):
    report, progress, ctx = _stage_run(tmp_path, lbs=1, junit=str(tmp_path / "out" / "j.xml"))
    reasons = {c["name"]: c["message"] for c in report["cases"]}
    assert report["failed"] == 0 and report["skipped"] == len(report["cases"]) == 10
    assert "needs at least 2 nodes that may hold the VIP; this cluster has 1" in reasons[
        "test_failover_a_keepalived_stopped"]  # keepalived-haproxy's own case, through the shared bench
    assert "this cluster has 1" in reasons["test_failover_d_link_cut_without_split_brain"]  # the generic one
    assert "Kubernetes is not installed" in reasons["test_every_node_is_ready"]
    assert (tmp_path / "out" / "j.xml").exists() and (ctx.cluster_dir / "reports" / "conformance-junit.xml").exists()
    assert ctx.record["summary"] == {"passed": 0, "failed": 0, "skipped": 10}
    assert any(s == "report" and "test_failover_d_link_cut_without_split_brain" in m for s, m in progress)


def test_no_failover_deselects_the_matrix(tmp_path):
    report, _progress, _ctx_ = _stage_run(tmp_path, lbs=0, failover=False)
    assert not [c for c in report["cases"] if "failover" in c["name"]]
    assert report["cases"], "the other checks still ran"


@pytest.mark.parametrize("lbs", [0])
def test_plain_pytest_with_a_cluster_dir_works_from_the_repository(tmp_path, lbs):
    """`pytest conformance/ --kubitect-cluster-dir DIR` (conftest path): parametrised ids, skip reasons."""
    ctx = _ctx(tmp_path, lbs=lbs, vip=None)
    from kubitect_core.verify import write_inventory

    write_inventory(ctx)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
                           "conformance/test_loadbalancers.py", "conformance/test_failover.py",
                           f"--kubitect-cluster-dir={ctx.cluster_dir}", "-k", "not api_answers"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "conformance/test_loadbalancers.py:18: the cluster has no load balancers" in proc.stdout, \
        proc.stdout[-2000:]
    assert "failover needs at least 2 nodes that may hold the VIP; this cluster has 0" in proc.stdout
    assert " failed" not in proc.stdout and "error" not in proc.stdout.lower(), proc.stdout[-2000:]
    # keepalived-haproxy's own checks, as the verify stage runs a contributed module (no conftest)
    own = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", "--noconftest",
                          "-p", "kubitect_conformance.fixtures", "plugins/keepalived_haproxy/conformance_checks.py",
                          f"--kubitect-cluster-dir={ctx.cluster_dir}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert ("SKIPPED [2] plugins/keepalived_haproxy/conformance_checks.py: the cluster has no load balancers"
            in own.stdout), own.stdout[-2000:]
    assert " failed" not in own.stdout and "error" not in own.stdout.lower(), own.stdout[-2000:]


def test_plain_http_prober_measures_a_gap_from_the_local_vantage():
    """The whoami target (no API server yet): the prober runs locally over plain HTTP on loopback."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kubitect_conformance.vip import Target, Vantage

    class WhoAmI(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = b"lb-1\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), WhoAmI)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers = [server]

    def outage() -> None:
        servers[0].shutdown()
        servers[0].server_close()

        def back() -> None:
            time.sleep(0.4)
            servers.append(ThreadingHTTPServer(("127.0.0.1", port), WhoAmI))
            servers[-1].serve_forever()

        threading.Thread(target=back, daemon=True).start()

    try:
        result = Vantage(None, None).probe("127.0.0.1", outage, target=Target(port, "/", False, "whoami"),
                                          max_seconds=5)
    finally:
        servers[-1].shutdown()
    assert result["recovered"] and result["outages"] >= 1
    assert 300 <= result["gap_ms"] <= 1500, result
