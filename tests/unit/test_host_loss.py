"""Unit tier: the host-loss case's plumbing without a cluster: it never runs unless asked for and
confirmed, its flags reach the conformance run, its budget comes from the timers, the prober's
answer runs show two holders, the report names the fault, and the faults call what they should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubitect_conformance import hostloss
from kubitect_conformance.plugin import kubitect_conformance_modules
from kubitect_conformance.vip import declared_budget
from kubitect_plugins.keepalived_haproxy import budgets as budgets_of
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings
from typer.testing import CliRunner

from kubitect_core import failover
from kubitect_core.cli import app
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.report import render_text
from kubitect_core.topology import Node, Topology
from kubitect_core.verify import pytest_argv, write_inventory

ROOT = Path(__file__).resolve().parents[2]


def budgets(settings, backup_priority: int, margin_s: float) -> dict:
    """What the suite holds each case to: the budgets keepalived-haproxy declares for a backup of
    this priority (recorded at apply), plus the margin."""
    declared = budgets_of.declared(settings, {"backup": backup_priority}, holder_is_backend=False)
    return {case: declared_budget(declared, case, margin_s) for case in declared["budgets"]}


def _ctx(tmp_path: Path, **options) -> StageContext:
    nodes = (Node(role="lb", id="1", name="c-lb-1", host="h1", ip="10.9.0.5", mac=None, cpu=1, ram_gib=1,
                  main_disk_gib=10, priority=10),
             Node(role="lb", id="2", name="c-lb-2", host="h2", ip="10.9.0.6", mac=None, cpu=1, ram_gib=1,
                  main_disk_gib=10, priority=10))
    topo = Topology(cluster="c", nodes=nodes, vip="10.9.0.200", endpoint="10.9.0.200", virtual_router_id=9)
    config = SimpleNamespace(hosts=[SimpleNamespace(name=h, provider=None) for h in ("h1", "h2")])
    ssh = SshAccess("k8s", tmp_path / "id", tmp_path / "id.pub", tmp_path / "known_hosts")
    return StageContext(cluster="c", config=config, topology=topo, cluster_dir=tmp_path / "c", home=tmp_path,
                        ssh=ssh, record={}, facts={"vms": {"libvirt": {"hosts": {"h1": {"uri": "test:///x"}}}}},
                        options=options)


def test_the_host_loss_case_is_skipped_unless_chaos_host_is_asked_for(tmp_path):
    ctx = _ctx(tmp_path)
    write_inventory(ctx)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
                           "conformance/test_host_loss.py", f"--kubitect-cluster-dir={ctx.cluster_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "destructive" in proc.stdout and "kubitect verify --chaos host" in proc.stdout, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "failed" not in proc.stdout


def test_chaos_flags_reach_the_conformance_run_and_the_module_runs_last(tmp_path):
    mods = kubitect_conformance_modules()
    argv = pytest_argv(_ctx(tmp_path, chaos="host", host_fault="uplink"), mods, tmp_path / "j.xml", tmp_path / "i")
    assert "--chaos=host" in argv and "--host-fault=uplink" in argv
    plain = pytest_argv(_ctx(tmp_path), mods, tmp_path / "j.xml", tmp_path / "i")
    assert not [a for a in plain if a.startswith("--chaos")]
    assert Path(mods[-1]).name == "test_host_loss.py"


def test_verify_chaos_refuses_without_a_terminal_unless_yes(kubitect_home):
    out = CliRunner().invoke(app, ["verify", "--cluster", "c", "--chaos", "host"])
    assert out.exit_code == 2 and "pass --auto-approve (or --yes)" in out.output and "power cut" in out.output
    bad = CliRunner().invoke(app, ["verify", "--cluster", "c", "--chaos", "everything", "--yes"])
    assert bad.exit_code == 2 and "--chaos takes host" in bad.output
    fault = CliRunner().invoke(app, ["verify", "--cluster", "c", "--chaos", "host", "--host-fault", "flood", "-y"])
    assert fault.exit_code == 2 and "--host-fault takes power, uplink" in fault.output


def test_verify_uplink_fault_outside_a_lab_is_refused_before_anything_runs(kubitect_home, monkeypatch):
    """A pulled cable exists only at a lab's switch: asked for on real hosts, verify refuses at
    once (exit 2) and says where it works, instead of running a suite whose case then skips."""
    monkeypatch.delenv("KUBITECT_LAB", raising=False)
    out = CliRunner().invoke(app, ["verify", "--cluster", "c", "--chaos", "host", "--host-fault", "uplink", "-y"])
    assert out.exit_code == 2 and "inside a lab" in out.output and "--host-fault power" in out.output
    assert not (kubitect_home / "clusters" / "c").exists()


def test_host_loss_budget_is_the_master_down_interval_plus_margin():
    settings = VrrpSettings(advert_int=1)
    b = budgets(settings, backup_priority=10, margin_s=0.5)
    skew = (256 - 10) / 256
    assert b["host_loss"].ms == b["link_cut"].ms == round((3 + skew + 0.5) * 1000, 1)
    assert budgets_of.expected_budget(settings, margin_s=0.5)["host_loss"] == b["host_loss"].ms


def test_answer_runs_show_requests_alternating_between_two_holders():
    P = failover.Probe
    probes = [P(0.0, 0.1, True, "lb-1"), P(0.1, 0.2, True, "lb-1"), P(0.2, 0.5, False, "TimeoutError"),
              P(0.3, 0.4, True, "lb-2"), P(0.4, 0.45, True, "lb-1"), P(0.5, 0.6, True, "lb-2")]
    assert failover.answer_runs(probes) == [["lb-1", 2], ["lb-2", 1], ["lb-1", 1], ["lb-2", 1]]
    assert failover.answer_runs(probes, since=0.25) == [["lb-2", 1], ["lb-1", 1], ["lb-2", 1]]


def test_the_report_names_the_fault_and_the_lost_host():
    report = {"cluster": "c", "passed": 1, "failed": 0, "skipped": 0, "cases": [], "failover": [
        {"case": "host_loss", "result": "passed", "budget_ms": 4461.0, "gap_ms": 3900.2, "takeover_ms": 3700.0,
         "holder_before": "c-lb-2", "holder_after": "c-lb-1", "host_fault": "power", "lost_host": "host2"}]}
    line = next(ln for ln in render_text(report).splitlines() if ln.startswith("host_loss"))
    assert "host_loss (power: host2)" in line and "3900" in line and "c-lb-2 -> c-lb-1" in line


def test_power_cut_asks_the_hosts_provider_and_uplink_needs_a_lab(monkeypatch):
    calls = []

    class Provider:
        def power_off(self, record, host, names):
            calls.append((record, host, names))
            return {n: 1.0 + i / 1000 for i, n in enumerate(names)}

    registry = SimpleNamespace(providers={"libvirt": Provider(), "nspawn": object()})
    monkeypatch.setattr("kubitect_core.plugins.load_registry", lambda: registry)
    inv = {"nodes": [{"name": "a", "host": "h1", "provider": "libvirt"}, {"name": "b", "host": "h2",
                                                                         "provider": "nspawn"}],
           "facts": {"vms": {"libvirt": {"hosts": {"h1": {"uri": "qemu+ssh://x/system"}}}}}}
    cut = hostloss.fault_named("power", inv)
    assert cut.cut("h1", ["a"]) == {"stopped": ["a"], "spread_ms": 0.0}
    assert calls == [({"hosts": {"h1": {"uri": "qemu+ssh://x/system"}}}, "h1", ["a"])]
    with pytest.raises(hostloss.FaultUnavailable, match="cannot cut its power"):
        cut.check("h2")
    monkeypatch.delenv("KUBITECT_LAB", raising=False)
    with pytest.raises(hostloss.FaultUnavailable, match="needs a lab"):
        hostloss.fault_named("uplink", inv).check("h1")
    with pytest.raises(hostloss.FaultUnavailable, match="unknown host fault"):
        hostloss.fault_named("flood", inv)
    assert os.environ.get("KUBITECT_LAB") is None


def test_the_registry_loads_twice_in_one_process_with_the_libvirt_provider():
    """The host-loss case loads the plugins in the conformance process; a second load (any caller)
    must still offer the libvirt provider, the same instance, with its power_off."""
    from kubitect_core.plugins import load_registry

    pytest.importorskip("libvirt", reason="libvirt-python is not installed (the provider is a stand-in)")
    first, second = load_registry(), load_registry()
    assert "libvirt" in second.providers and second.providers["libvirt"] is first.providers["libvirt"]
    assert not [p.error for p in second.plugins if p.error]
    assert hasattr(second.providers["libvirt"], "power_off")


def test_the_gap_is_the_longest_outage_not_a_blip_before_the_fault():
    """One request timing out on a busy emulated machine just before the fault takes effect must
    not stand in for the outage the fault caused (it made the link-cut case stop watching early)."""
    P = failover.Probe
    probes = [P(0.0, 0.1, True, "a"), P(0.1, 0.35, False, "TimeoutError"), P(0.2, 0.3, True, "a"),
              P(0.5, 0.75, False, "TimeoutError"), P(1.0, 1.25, False, "TimeoutError"), P(2.5, 2.6, True, "b")]
    result = failover.FailoverResult(len(probes), 3, failover.outages(probes))
    assert len(result.outages) == 2
    assert result.gap_ms == pytest.approx(2100.0)  # 0.5 -> 2.6, not the 0.2 s blip


def test_the_prober_marks_the_fault_on_go_and_watches_at_least_min_seconds():
    import http.server
    import json
    import threading
    import time

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"lb-x")

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "kubitect_core.failover", "probe", "127.0.0.1", "--port",
                                 str(server.server_port), "--path", "/", "--plain", "--go-on-stdin",
                                 "--min-seconds", "1.0", "--quiet", "0.2", "--max-seconds", "5"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # no mark yet: the prober waits for the go
        sent = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(0.5)  # the injection takes a while: min_seconds count from its end
        proc.stdin.write("injected\n")
        proc.stdin.flush()
        out = json.loads(proc.communicate(timeout=20)[0].splitlines()[-1])
        watched = time.monotonic() - sent
    finally:
        server.shutdown()
        server.server_close()
    assert out["mark"] >= sent - 0.05 and watched >= 1.5  # marked at the go, min_seconds after the injection
    assert out["answers"] and out["answers"][0][0] == "lb-x"  # who answered, after the mark
