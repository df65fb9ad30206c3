"""VIP failover side by side: Kubitect's own settings, our `standard` profile, our `fast` profile.

One lab (bench_lab.py: two load balancers and a master, built by kubitect on systemd-nspawn nodes
or TCG VMs), the three configurations one after the other, the same faults on the VIP holder
(keepalived stopped, HAProxy killed, keepalived crashed, link cut, host lost), N runs each. A run
measures, from a client on the node bridge (kubitect_core.failover_streams):

- the gap a client with a fresh connection per request sees (first failed request's send time to
  the first success after it; 0 when no request failed; with several outages, the longest after
  the fault was sent: an emulated VM drops the odd request on its own),
- the gap a client holding a keep-alive connection sees (kubectl, kubelets),
- when another load balancer answered for the VIP (the takeover; for a crashed keepalived the
  only visible effect, since the dead instance's address and HAProxy keep serving meanwhile;
  resolution: the time the fault command took, printed with it).

It prints one table (cells: min / median / max in ms over the runs; "never" = not recovered within
the prober's window) and writes everything as JSON. Each configuration is one phase: the lab is
built, that configuration's faults run, the lab is torn down (with `--lock FILE`, the phase holds
an exclusive flock on FILE, so other labs on a shared machine interleave between phases but never
run beside a measurement). Needs root; run it alone on the machine:

    .venv/bin/python bench/failover_side_by_side.py --lab nspawn --runs 10 \\
        --json bench/results/side-by-side-nspawn.json
    .venv/bin/python bench/failover_side_by_side.py --lab vm --runs 5 \\
        --host-lost-runs 3 --json bench/results/side-by-side-vm.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lab import CONFIGS, FAULTS, BenchLab, cluster_config  # noqa: E402
from kubitect_plugins.keepalived_haproxy.budgets import expected_budget, skew_s  # noqa: E402
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings, profile_defaults  # noqa: E402

from kubitect_core.failover import PROBE_TIMEOUT_S  # noqa: E402
from kubitect_core.failover_streams import longest_outage_ms  # noqa: E402

CLIENTS = ("fresh", "keepalive")
GOALS = {"link_cut": 500, "host_lost": 500, "haproxy_killed": 500, "keepalived_stopped": 100}


def expected_s(config: str, fault: str) -> float:
    """Seconds by which the VIP should have moved under `config` (the prober waits this + 1.5 s)."""
    if config == "kubitect":  # VRRPv2, advert 1, priority 10 + 2 while the check passes
        down = 3 + skew_s(1.0, 12, 2)
        return {"keepalived_stopped": skew_s(1.0, 12, 2), "haproxy_killed": 2 + down}.get(fault, down)
    budgets = expected_budget(profile_defaults(config), backup_priority=10, margin_s=0)
    return budgets.get("link_cut" if fault == "host_lost" else fault, budgets["link_cut"]) / 1000


def one_run(config: str, fault: str, probed) -> dict:
    """What a run shows: both clients' gaps, the takeover, the outage counts."""
    res = probed.result
    holders = res["holders"]
    first = holders[0][1] if holders else None
    moved = next((h for h in holders[1:] if h[1] != first), None)
    return {
        "fresh_ms": longest_outage_ms(res["fresh"]["windows"], probed.started),
        "keepalive_ms": longest_outage_ms(res["keepalive"]["windows"], probed.started),
        "fresh_outages": res["fresh"]["outages"], "keepalive_outages": res["keepalive"]["outages"],
        "takeover_ms": None if moved is None else round((moved[0] - probed.injected) * 1000, 1),
        "inject_ms": round(probed.inject_s * 1000, 1), "holder_before": first,
        "holder_after": moved[1] if moved else first, "moves": max(0, len(holders) - 1),
        "keepalive_connects": res["keepalive_connects"],
    }


def summary(values: list[float | None]) -> dict:
    """min / median / max over runs; an unrecovered run counts as infinitely long."""
    nums = [float("inf") if v is None else float(v) for v in values]
    if not nums:
        return {}
    return {"min": min(nums), "median": statistics.median(nums), "max": max(nums), "runs": len(nums),
            "unrecovered": sum(v is None for v in values)}


def fmt(ms: float) -> str:
    return "never" if ms == float("inf") else f"{ms:.0f}"


def cell(s: dict) -> str:
    return f"{fmt(s['min'])} / {fmt(s['median'])} / {fmt(s['max'])}" if s else "-"


async def bench(lab: BenchLab, configs: list[str], faults: list[str], runs: int, host_lost_runs: int) -> dict:
    """Every fault `runs` times under every configuration; the raw runs per configuration and fault."""
    out: dict[str, dict[str, list[dict]]] = {}
    for config in configs:
        started = time.monotonic()
        await lab.use(config)
        out[config] = {}
        for fault in faults:
            wait = expected_s(config, fault)
            out[config][fault] = []
            for i in range(host_lost_runs if fault == "host_lost" else runs):
                for attempt in (1, 2):  # a run whose prober itself failed is measured again, once
                    holder = await lab.settle()
                    ctx = await lab.prepare(fault, holder)
                    try:
                        probed = await lab.probe(lambda f=fault, h=holder, c=ctx: lab.inject(f, h, c),
                                                 min_seconds=wait + 1.5, max_seconds=2 * wait + 12)
                    except RuntimeError as exc:
                        if attempt == 2:  # keep what was measured: this run is left out, said in the notes
                            lab.notes.append(f"{config} {fault} run {i + 1} was not measured: the prober failed "
                                             f"twice ({str(exc)[:160]})")
                            probed = None
                            break
                        lab.log(f"{config} {fault} #{i + 1}: the prober failed, measuring again: {exc}")
                        lab.notes.append(f"{config} {fault} run {i + 1} was measured twice: the prober failed")
                        continue
                    finally:
                        await lab.restore(fault, holder, ctx)
                    break
                if probed is None:
                    continue
                run = one_run(config, fault, probed)
                out[config][fault].append(run)
                lab.log(f"{config:8} {fault:18} #{i + 1}: fresh {run['fresh_ms']} ms, keep-alive "
                        f"{run['keepalive_ms']} ms, takeover {run['takeover_ms']} ms "
                        f"({run['holder_before']} -> {run['holder_after']})")
        lab.log(f"{config}: done in {time.monotonic() - started:.0f} s")
    return out


def cells(raw: dict) -> dict:
    """fault -> row -> config -> summary, for the table and the JSON."""
    table: dict[str, dict[str, dict]] = {}
    for config, per_fault in raw.items():
        for fault, runs in per_fault.items():
            rows = table.setdefault(fault, {})
            for client in CLIENTS:
                rows.setdefault(client, {})[config] = summary([r[f"{client}_ms"] for r in runs])
            if fault == "keepalived_crashed":
                rows.setdefault("takeover", {})[config] = summary([r["takeover_ms"] for r in runs])
    return table


def render_table(table: dict, configs: list[str], title: str, markdown: bool = False) -> str:
    """One text table (or a Markdown one, for docs/failover.md): a row per fault and client, a
    column per configuration, plus the ratio."""
    ratio = "kubitect" in configs and "fast" in configs
    lines = [["fault", "client", *(f"{c} min/med/max ms" for c in configs), *(["kubitect/fast"] if ratio else [])]]
    for fault in FAULTS:
        for client, per_config in table.get(fault, {}).items():
            row = [fault, {"fresh": "fresh conn", "keepalive": "keep-alive", "takeover": "takeover"}[client]]
            row += [cell(per_config.get(c, {})) for c in configs]
            if ratio:
                k, f = per_config.get("kubitect", {}), per_config.get("fast", {})
                row.append("-" if not (k and f and f["median"] > 0) else
                           "inf" if k["median"] == float("inf") else f"{k['median'] / f['median']:.1f}x")
            lines.append(row)
    if markdown:
        rows = [f"| {' | '.join(r)} |" for r in lines]
        return "\n".join([title, "", rows[0], "|" + "---|" * len(lines[0]), *rows[1:]])
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    text = [title, ""]
    for n, r in enumerate(lines):
        text.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def finite(value):
    """The document with every infinite number (a run that never recovered) as null."""
    if isinstance(value, float) and value == float("inf"):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def goals(table: dict) -> list[str]:
    """The issue's goals for the fast profile, checked against this run (fresh connections)."""
    out = []
    for fault, limit in GOALS.items():
        per = table.get(fault, {}).get("fresh", {})
        fast, kub = per.get("fast"), per.get("kubitect")
        if not fast:
            continue
        ok = fast["median"] <= limit
        line = f"{fault}: fast median {fmt(fast['median'])} ms (goal <= {limit})"
        if kub and fault != "keepalived_stopped":
            factor = float("inf") if fast["median"] == 0 else kub["median"] / fast["median"]
            ok = ok and factor >= 5
            line += f", {'inf' if factor == float('inf') else f'{factor:.1f}'}x Kubitect's (goal >= 5x)"
        out.append(("met    " if ok else "MISSED ") + line)
    return out


def settings_used(configs: list[str]) -> dict:
    out = {}
    for c in configs:
        if c == "kubitect":
            out[c] = {"advert_int": 1, "vrrp_version": 2, "unicast": False, "preempt": True,
                      "check": "killall -0 haproxy, interval 2, weight +2", "priority": 10}
        else:
            s: VrrpSettings = profile_defaults(c)
            out[c] = s.model_dump()
    return out


async def run_lab(args, ns: str, home: Path, raw: dict, flags: dict, kind: str) -> dict:
    lab = BenchLab(kind=kind, ns=ns, home=home, config_path=home / "cluster.yaml", raw=raw, flags=flags,
                   log=lambda m: print(m, file=sys.stderr, flush=True),
                   fresh_target="whoami" if kind == "vm" else "api", interval=0.05 if kind == "vm" else 0.02)
    if kind == "vm":
        lab.notes.append("fresh connections ask HAProxy's whoami frontend (VIP:8405, plain HTTP): the stand-in "
                         "API on an emulated VM cannot answer a TLS handshake every 20 ms; the keep-alive client "
                         "asks the API through VIP:6443")
        lab.notes.append("on VMs every client sends a request each 50 ms (nspawn: 20 ms): HAProxy on one emulated "
                         "vCPU does not answer 100 new connections a second in time")
        lab.notes.append("host_lost on VMs: the holder's tap port on the node bridge is set down and its domain "
                         "hard powered off (`virsh destroy`, i.e. QEMU killed) in the same instant; it then boots "
                         "again and the engine's vms and loadbalancers stages configure it")
    try:
        await lab.up()
        raw_runs = await bench(lab, args.configs, args.faults, args.runs, args.host_lost_runs)
    finally:
        await lab.down()
    return {"raw": raw_runs, "notes": lab.notes}


def nspawn_main(args) -> dict:
    import nodes_lab
    import sshd_lab

    rootfs = nodes_lab.nspawn_rootfs("keepalived", "haproxy", "openssl")
    with sshd_lab.lab_netns("kbb-") as ns:
        os.environ[sshd_lab.LAB_MARK_ENV] = ns
        home = Path(tempfile.mkdtemp(prefix="kbb-home-"))
        raw = cluster_config("nspawn", f"kbb-{ns[-6:]}", args.net, bridge=f"kb{ns[-6:]}")
        with sshd_lab.entered_netns(ns):
            return asyncio.run(run_lab(args, ns, home, raw, {"nspawn_rootfs": str(rootfs)}, "nspawn"))


def vm_main(args) -> dict:
    import sshd_lab
    import vm_lab

    from kubitect_core.lab import libvirtd

    deadline = time.monotonic() + 600
    while libvirtd.socket_answers():  # another lab's libvirtd (one per machine) ends with its lock
        if time.monotonic() > deadline:
            raise SystemExit("another libvirtd serves /run/libvirt/libvirt-sock (another lab): one per machine")
        time.sleep(5)
    image = vm_lab.lb_image()
    bridge = "kbb9br0"
    home = Path(tempfile.mkdtemp(prefix="kbb9-home-"))
    with vm_lab.bridge_lab("bench", "kbb9-", bridge, f"{args.net}.1/24") as lab:
        raw = cluster_config("vm", "kbb9-bench", args.net, image=image.qcow2, pools=home / "pools", bridge=bridge)
        with sshd_lab.entered_netns(lab.netns):
            return asyncio.run(run_lab(args, lab.netns, home, raw, {}, "vm"))


@contextlib.contextmanager
def held(lock: Path | None, what: str):
    """An exclusive flock on `lock` for one phase (nothing without one); says how long it waited."""
    if lock is None:
        yield
        return
    with open(lock, "a") as fh:
        asked = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_EX)
        print(f"{what}: lock {lock} held after {time.monotonic() - asked:.0f} s", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def phases(args, after_phase=None) -> dict:
    """One phase per configuration (lab up, its faults, lab down), each under the lock; merged.
    `after_phase(merged)` after each one (the JSON is written then: a later phase that cannot run
    leaves the earlier ones on disk)."""
    merged: dict = {"raw": {}, "notes": [], "phase_seconds": {}}
    all_configs = args.configs
    try:
        for config in all_configs:
            with held(args.lock, f"phase {config}"):
                started = time.monotonic()
                args.configs = [config]
                result = nspawn_main(args) if args.lab == "nspawn" else vm_main(args)
                merged["phase_seconds"][config] = round(time.monotonic() - started)
            merged["raw"].update(result["raw"])
            merged["notes"] += [n for n in result["notes"] if n not in merged["notes"]]
            if after_phase is not None:
                after_phase(merged)
    finally:
        args.configs = all_configs
    return merged


def report(args, result: dict, started: float, *, final: bool) -> None:
    """The table (printed when `final`) and the JSON document of what has been measured so far;
    columns in the canonical order (kubitect, standard, fast) whatever order the phases ran in."""
    configs = [c for c in CONFIGS if c in result["raw"]]
    table = cells(result["raw"])
    elapsed = round(time.monotonic() - started)
    if final:
        title = (f"VIP failover gaps, {args.lab} nodes, {args.runs} runs per cell"
                 + (f" ({args.host_lost_runs} for host_lost)" if args.host_lost_runs != args.runs else "")
                 + f"; {platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
        print(render_table(table, configs, title))
        for line in goals(table):
            print(line)
        for note in result["notes"]:
            print("note:", note)
        print(f"({elapsed} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"lab": args.lab, "runs": args.runs, "host_lost_runs": args.host_lost_runs, "configs": configs,
               "phase_order": list(result["raw"]), "complete": final,
               "settings": settings_used(configs), "cells": table, "goals": goals(table),
               "notes": result["notes"], "runs_detail": result["raw"], "seconds": elapsed,
               "phase_seconds": result["phase_seconds"], "probe_timeout_s": PROBE_TIMEOUT_S,
               "kernel": platform.release(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps(finite(doc), indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--lab", choices=("nspawn", "vm"), default="nspawn")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--host-lost-runs", type=int, default=None, help="runs of host_lost (default: --runs)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--net", default=None, help="the lab's /24 as a.b.c (default 10.93.0 / 10.94.0)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--lock", type=Path, default=None,
                        help="hold an exclusive flock on this file during each configuration's phase")
    parser.add_argument("--render", type=Path, default=None,
                        help="print the table of an earlier run's JSON (text and Markdown) and exit")
    args = parser.parse_args(argv)
    if args.render:
        doc = json.loads(args.render.read_text())
        table = {f: {client: {cfg: {k: (float("inf") if v is None and k in ("min", "median", "max") else v)
                                    for k, v in cell_.items()} for cfg, cell_ in per.items()}
                     for client, per in rows.items()} for f, rows in doc["cells"].items()}
        title = f"{doc['lab']} nodes, {doc['runs']} runs per cell ({doc['host_lost_runs']} for host_lost)"
        print(render_table(table, doc["configs"], title))
        print()
        print(render_table(table, doc["configs"], title, markdown=True))
        return 0
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, containers or libvirtd)")
    args.host_lost_runs = args.runs if args.host_lost_runs is None else args.host_lost_runs
    args.net = args.net or ("10.93.0" if args.lab == "nspawn" else "10.94.0")
    started = time.monotonic()
    result = phases(args, lambda partial: report(args, partial, started, final=False))
    report(args, result, started, final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
