"""Runs the conformance suite (pytest-testinfra modules) against a live cluster.

pytest runs in a child process, so a check that hangs or crashes cannot take the engine down,
and its JUnit XML is the single source of the results shown to the user and saved in reports/.
The child gets its own minimal pytest ini (markers only), so the suite behaves the same whatever
directory kubitect is started from.

Files in the cluster directory after a run:
    conformance/inventory.json      what the checks read (nodes, VIP, SSH access, facts)
    conformance/ssh_config          the OpenSSH client config the checks connect with
    reports/conformance-junit.xml   pytest's JUnit XML (measured gaps as <property> elements)
    reports/conformance.json        the report: counts, every case, the failover table
    reports/conformance.log         pytest's output

The report (reports/conformance.json, also copied to `--report FILE`):
    {"cluster", "time", "passed", "failed", "skipped",
     "nodes": [{"name", "role", "host", "domain", "ip", "address": config|dhcp}] (the as-built nodes checked),
     "cases": [{"name", "module", "outcome": passed|failed|skipped, "seconds", "message",
                "properties": {...recorded by the check, e.g. gap_ms}}],
     "failover": [{"case": link_cut|host_loss (the generic suite's) or the load balancer's own, e.g.
                            keepalived_stopped|haproxy_killed|keepalived_crashed|holder_back|apiserver_stopped,
                   "test", "result", "budget_ms", "budget_formula", "gap_ms" (None: never recovered),
                   "takeover_ms", "outages", "total_outage_ms", "holder_before", "holder_after",
                   "vantage", "vantage_reason", "margin_ms", "target" (what was probed), "message"}]}
The stage record keeps the summary counts and {case: {gap_ms, budget_ms, result}}.

Options (ctx.options): failover (default True; False deselects the `failover` marker), junit,
report (extra copies), failover_vantage (node name or "local"), failover_margin (seconds),
checks (a pytest -k expression, to run a subset), chaos ("host": also lose the VIP holder's whole
host, destructive) and host_fault (power | uplink).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubitect_core.contracts import Change, StageContext
from kubitect_core.report import render_text
from kubitect_core.stage import StageError

PYTEST_INI = """\
# Written by kubitect verify: the conformance run's own pytest settings.
[pytest]
markers =
    failover: VIP failover matrix (faults injected on the load balancers)
    chaos: destructive cases (a whole host lost); only with --chaos
junit_family = xunit1
"""
NUMERIC_PROPERTIES = ("budget_ms", "gap_ms", "takeover_ms", "total_outage_ms", "outages", "margin_ms", "link_cut_s",
                      "cut_spread_ms")


def _providers(config: Any) -> dict[str, str]:
    """host name -> provider name, from the config's hosts (resolved: the default provider when unset)."""
    out = {}
    for host in getattr(config, "hosts", None) or []:
        name = getattr(host, "name", None)
        if name:
            out[name] = getattr(host, "provider", None)
    return out


def inventory_nodes(ctx: StageContext) -> list[dict[str, Any]]:
    """The as-built topology's nodes (leased addresses included) with the provider of their host."""
    providers = _providers(ctx.config)
    nodes = []
    for n in ctx.topology.nodes:
        entry = asdict(n)
        entry["provider"] = providers.get(n.host)
        nodes.append(entry)
    return nodes


def write_inventory(ctx: StageContext) -> Path:
    """The one file conformance modules read: nodes, endpoint, VIP, SSH access, recorded facts."""
    topo = ctx.topology
    inventory = {
        "cluster": ctx.cluster,
        "vip": topo.vip,
        "endpoint": ctx.facts.get("loadbalancers", {}).get("endpoint") or topo.endpoint,
        # The endpoint's port, as the load balancer recorded it (6443 when it recorded none).
        "api_port": int(ctx.facts.get("loadbalancers", {}).get("port") or 6443),
        "virtual_router_id": topo.virtual_router_id,
        "nodes": inventory_nodes(ctx),
        "ssh": {"user": ctx.ssh.user, "private_key": str(ctx.ssh.private_key),
                "known_hosts": str(ctx.ssh.known_hosts)},
        "extensions": {k: (v.model_dump(by_alias=True, mode="json") if hasattr(v, "model_dump") else v)
                       for k, v in ctx.extensions.items()},
        "facts": ctx.facts,
        "options": {k: v for k, v in ctx.options.items() if isinstance(v, str | int | float | bool)},
    }
    path = ctx.cluster_dir / "conformance" / "inventory.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(inventory, indent=2, default=str))
    return path


def _number(value: str) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def parse_junit(path: Path) -> list[dict]:
    """Test cases from a JUnit XML file: name, outcome (passed/failed/skipped), seconds, message,
    and the properties a check recorded (`record_property`), e.g. a measured gap."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or el.text or "").strip()
        props = {}
        for prop in case.iter("property"):
            name, value = prop.get("name"), prop.get("value")
            props[name] = _number(value) if name in NUMERIC_PROPERTIES else value
        entry = {"name": case.get("name"), "module": case.get("classname"), "outcome": outcome,
                 "seconds": float(case.get("time") or 0), "message": message}
        if props:
            entry["properties"] = props
        cases.append(entry)
    return cases


def failover_rows(cases: list[dict]) -> list[dict]:
    """The failover table from the cases that recorded a `failover_case` property."""
    rows = []
    for c in cases:
        p = c.get("properties") or {}
        if "failover_case" not in p:
            continue
        gap = p.get("gap_ms")
        rows.append({"case": p["failover_case"], "test": c["name"], "result": c["outcome"],
                     "budget_ms": p.get("budget_ms"), "budget_formula": p.get("budget_formula"),
                     "gap_ms": gap if isinstance(gap, float) else None,
                     "takeover_ms": p.get("takeover_ms") if isinstance(p.get("takeover_ms"), float) else None,
                     "outages": p.get("outages"), "total_outage_ms": p.get("total_outage_ms"),
                     "holder_before": p.get("holder_before"), "holder_after": p.get("holder_after"),
                     "vantage": p.get("vantage"), "vantage_reason": p.get("vantage_reason"),
                     "margin_ms": p.get("margin_ms"), "target": p.get("target"),
                     "host_fault": p.get("host_fault"), "lost_host": p.get("lost_host"),
                     "message": c["message"]})
    return rows


def report_nodes(inventory_nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the report says about each checked node: where it was reached and how it got that address."""
    return [{"name": n.get("name"), "role": n.get("role"), "host": n.get("host"), "domain": n.get("domain"),
             "ip": n.get("ip"), "address": "dhcp" if n.get("dhcp") else "config"} for n in inventory_nodes]


def build_report(cluster: str, cases: list[dict], nodes: list[dict[str, Any]] | None = None) -> dict:
    """The JSON report: counts, the nodes checked, every case, and the failover table (ms)."""
    return {"cluster": cluster, "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "passed": sum(c["outcome"] == "passed" for c in cases),
            "failed": sum(c["outcome"] == "failed" for c in cases),
            "skipped": sum(c["outcome"] == "skipped" for c in cases),
            "nodes": report_nodes(nodes or []), "cases": cases, "failover": failover_rows(cases)}


def pytest_argv(ctx: StageContext, modules: list[str], junit: Path, ini: Path) -> list[str]:
    """The child pytest command line (exposed so tests and users can see exactly what runs)."""
    rootdir = os.path.commonpath([str(Path(m).parent) for m in modules])  # short node ids: module::test
    argv = [sys.executable, "-m", "pytest", "-q", "-rfE", "--noconftest", "-p", "no:cacheprovider",
            "-c", str(ini), "--rootdir", rootdir, "-p", "kubitect_conformance.fixtures",
            f"--kubitect-cluster-dir={ctx.cluster_dir}", f"--junitxml={junit}", *modules]
    if not ctx.options.get("failover", True):
        argv += ["-m", "not failover"]
    for opt in ("failover_vantage", "failover_margin", "chaos", "host_fault"):
        if ctx.options.get(opt) is not None:
            argv.append(f"--{opt.replace('_', '-')}={ctx.options[opt]}")
    if ctx.options.get("checks"):  # a -k expression: run a subset (tests, debugging)
        argv += ["-k", str(ctx.options["checks"])]
    return argv


async def run_conformance(ctx: StageContext, registry) -> list[Change]:
    """The verify stage: run every contributed conformance module, save and show the report.

    Raises StageError naming the failed checks (and the report path) when any check failed.
    """
    modules = registry.conformance_modules()
    if not modules:
        raise StageError("no conformance modules are installed (the built-in 'conformance' plugin is missing "
                         "or disabled)")
    write_inventory(ctx)
    reports = ctx.cluster_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    ini = ctx.cluster_dir / "conformance" / "pytest.ini"
    ini.write_text(PYTEST_INI)
    junit = reports / "conformance-junit.xml"
    junit.unlink(missing_ok=True)
    argv = pytest_argv(ctx, modules, junit, ini)
    ctx.progress(ctx.cluster, f"running {len(modules)} conformance module(s)"
                 + ("" if ctx.options.get("failover", True) else " (failover matrix off)"))
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, cwd=str(ini.parent))
    out, _ = await proc.communicate()
    (reports / "conformance.log").write_bytes(out)
    if not junit.exists():
        raise StageError(f"conformance run produced no results (exit {proc.returncode}):\n"
                         + out.decode(errors="replace")[-2000:])
    cases = parse_junit(junit)
    report = build_report(ctx.cluster, cases, inventory_nodes(ctx))
    report_path = reports / "conformance.json"
    report_path.write_text(json.dumps(report, indent=2))
    for option, source in (("junit", junit), ("report", report_path)):
        if ctx.options.get(option):
            target = Path(ctx.options[option])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    ctx.record["last_report"] = str(report_path)
    ctx.record["summary"] = {k: report[k] for k in ("passed", "failed", "skipped")}
    ctx.record["failover"] = {r["case"]: {"gap_ms": r["gap_ms"], "budget_ms": r["budget_ms"], "result": r["result"]}
                              for r in report["failover"]}
    ctx.progress("report", "\n" + render_text(report))
    if report["failed"] or proc.returncode not in (0, 5):
        failed = [c["name"] for c in cases if c["outcome"] == "failed"]
        first = next((c for c in cases if c["outcome"] == "failed"), None)
        reason = f"; first: {first['message'].splitlines()[0][:600]}" if first and first["message"] else ""
        raise StageError(f"conformance failed: {', '.join(failed) or 'pytest exit ' + str(proc.returncode)}"
                         f"{reason} (details: {report_path})")
    return []
