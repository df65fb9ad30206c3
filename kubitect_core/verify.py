"""Runs the conformance suite (pytest-testinfra modules) against a live cluster.

pytest runs in a child process, so a check that hangs or crashes cannot take the engine down,
and its JUnit XML is the single source of the results shown to the user and saved in reports/.
"""

from __future__ import annotations

import asyncio
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from kubitect_core.contracts import Change, StageContext
from kubitect_core.stage import StageError


def write_inventory(ctx: StageContext) -> Path:
    """The one file conformance modules read: nodes, endpoint, VIP, SSH access, recorded facts."""
    topo = ctx.topology
    inventory = {
        "cluster": ctx.cluster,
        "vip": topo.vip,
        "endpoint": ctx.facts.get("loadbalancers", {}).get("endpoint") or topo.endpoint,
        "virtual_router_id": topo.virtual_router_id,
        "nodes": [asdict(n) for n in topo.nodes],
        "ssh": {"user": ctx.ssh.user, "private_key": str(ctx.ssh.private_key),
                "known_hosts": str(ctx.ssh.known_hosts)},
        "extensions": {k: v.model_dump(by_alias=True, mode="json") for k, v in ctx.extensions.items()},
        "facts": ctx.facts,
        "options": {k: v for k, v in ctx.options.items() if isinstance(v, str | int | float | bool)},
    }
    path = ctx.cluster_dir / "conformance" / "inventory.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(inventory, indent=2, default=str))
    return path


def parse_junit(path: Path) -> list[dict]:
    """Test cases from a JUnit XML file: name, outcome (passed/failed/skipped), seconds, message."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or el.text or "").strip()
        cases.append({"name": case.get("name"), "module": case.get("classname"), "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return cases


async def run_conformance(ctx: StageContext, registry) -> list[Change]:
    modules = registry.conformance_modules()
    if not modules:
        raise StageError("no conformance modules are installed (the built-in 'conformance' plugin is missing "
                         "or disabled)")
    write_inventory(ctx)
    reports = ctx.cluster_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    junit = Path(ctx.options.get("junit") or reports / "conformance-junit.xml")
    argv = [sys.executable, "-m", "pytest", "-q", "-rfE", "--noconftest", "-p", "no:cacheprovider",
            "-p", "kubitect_conformance.fixtures", f"--kubitect-cluster-dir={ctx.cluster_dir}",
            f"--junitxml={junit}", "-o", "junit_family=xunit1", *modules]
    if not ctx.options.get("failover", True):
        argv += ["-m", "not failover"]
    ctx.progress(ctx.cluster, f"running {len(modules)} conformance module(s)")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    (reports / "conformance.log").write_bytes(out)
    if not junit.exists():
        raise StageError(f"conformance run produced no results (exit {proc.returncode}):\n"
                         + out.decode(errors="replace")[-2000:])
    cases = parse_junit(junit)
    report = {"cluster": ctx.cluster, "time": datetime.now(UTC).isoformat(timespec="seconds"),
              "passed": sum(c["outcome"] == "passed" for c in cases),
              "failed": sum(c["outcome"] == "failed" for c in cases),
              "skipped": sum(c["outcome"] == "skipped" for c in cases), "cases": cases}
    report_path = Path(ctx.options.get("report") or reports / "conformance.json")
    report_path.write_text(json.dumps(report, indent=2))
    ctx.record["last_report"] = str(report_path)
    ctx.record["summary"] = {k: report[k] for k in ("passed", "failed", "skipped")}
    for c in cases:
        ctx.progress(c["name"], f"{c['outcome']} ({c['seconds']:.2f}s)" + (f": {c['message'][:200]}"
                                                                         if c["outcome"] == "failed" else ""))
    if report["failed"] or proc.returncode not in (0, 5):
        failed = [c["name"] for c in cases if c["outcome"] == "failed"]
        raise StageError(f"conformance failed: {', '.join(failed) or 'pytest exit ' + str(proc.returncode)} "
                         f"(details: {report_path})")
    return []
