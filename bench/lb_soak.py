"""Soak: no false failovers. Both load balancers under full CPU load for N minutes, clients watching.

The lab of the failover benchmark (bench_lab.py: two load balancers and a master, built by
kubitect on systemd-nspawn nodes or TCG VMs) runs one VRRP configuration (default: the plugin's
default profile). On each load balancer every CPU it sees is kept busy by a busy loop at normal
priority (a transient systemd unit, `nproc` loops), so keepalived competes with a saturated
node, and the three VIP clients (kubitect_core.failover_streams: fresh connections, a kept-open
connection, the holder) run the whole time. Nothing is injected. At the end it counts:

- VIP moves: changes of the load balancer answering on the VIP, and "Entering MASTER STATE"
  lines keepalived logged on each node during the soak (goal: 0 moves, 1 holder);
- failed requests of both clients (goal: 0): refused, reset, or unanswered for 1 s;
- keepalived's "timer expired" warnings (it noticed it was not scheduled in time);
- the load the nodes really had (load average, the busy loops' CPU seconds).

    .venv/bin/python bench/lb_soak.py --lab nspawn --minutes 10 \\
        --json bench/results/soak-nspawn.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lab import BenchLab, cluster_config  # noqa: E402
from kubitect_plugins.keepalived_haproxy.settings import DEFAULT_PROFILE, PROFILES  # noqa: E402

# A request fails when refused, reset, or unanswered this long (not the benchmark's 0.25 s, which
# times gaps and would count requests merely slowed by the full CPU load as failed).
REQUEST_TIMEOUT_S = 1.0
HOG_UNIT = "kubitect-soak-hog"
HOG = (f"systemd-run --unit={HOG_UNIT} --collect sh -c "
       "'for i in $(seq $(nproc)); do (while :; do :; done) & done; wait'")
# CPU seconds the busy loops got (ps, since cgroup CPU accounting is not on in every node)
HOG_CPU_SECONDS = (f"cg=$(systemctl show -p ControlGroup --value {HOG_UNIT}); "
                   "pids=$(cat /sys/fs/cgroup/systemd$cg/cgroup.procs /sys/fs/cgroup$cg/cgroup.procs 2>/dev/null "
                   "| paste -sd, -); [ -n \"$pids\" ] && ps -o times= -p \"$pids\" | awk '{s += $1} END {print s}'")


async def soak(lab: BenchLab, config: str, vrrp: dict, minutes: float) -> dict:
    """Runs `config` (with `vrrp` keys over it) under load for `minutes`; what the clients and nodes saw."""
    if config == "kubitect":
        await lab.use("kubitect")
    else:
        lab.raw["cluster"]["nodes"]["loadBalancer"]["vrrp"] = {"profile": config, **vrrp}
        lab.write_config()
        await lab.stages("loadbalancers")
        lab.config_name = config
        await lab.restart_keepalived()
    holder = await lab.settle()
    since = (await lab.root(holder, "date '+%Y-%m-%d %H:%M:%S'")).stdout.strip()
    for lb in lab.lbs:
        await lab.root(lb.name, HOG)
    await asyncio.sleep(2)
    seconds = minutes * 60
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubitect_core.failover_streams", lab.vip, "--until-stdin", "--max-seconds",
        str(seconds + 120), "--report-every", "60", "--timeout", str(REQUEST_TIMEOUT_S),
        "--fresh-target", lab.fresh_target, "--interval", f"{lab.interval:g}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=None)
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the clients did not start: {ready!r}")
        started = time.monotonic()
        await asyncio.sleep(seconds)
        out, _ = await asyncio.wait_for(proc.communicate(b"stop\n"), 120)
        elapsed = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    clients = json.loads([line for line in out.decode().splitlines() if line.startswith("{")][-1])
    nodes = {}
    for lb in lab.lbs:
        log = await lab.root(lb.name, f"journalctl -u keepalived -o cat --no-pager --since '{since}'", check=False)
        load = await lab.root(lb.name, "cat /proc/loadavg; nproc; " + HOG_CPU_SECONDS, check=False)
        await lab.root(lb.name, f"systemctl stop {HOG_UNIT}", check=False)
        loadavg, cpus, hog_s = (load.stdout.split("\n") + ["", "", ""])[:3]
        nodes[lb.name] = {
            "entered_master": log.stdout.count("Entering MASTER STATE"),
            "entered_fault": log.stdout.count("Entering FAULT STATE"),
            "timer_expired": log.stdout.lower().count("timer expired"),
            "loadavg": loadavg.strip(), "cpus": cpus.strip(),
            "hog_cpu_s": int(hog_s) if hog_s.strip().isdigit() else None,
        }
    holders = [h[1] for h in clients["holders"]]
    return {
        "config": config, "vrrp": {"profile": config, **vrrp} if config != "kubitect" else "kubitect",
        "minutes": round(elapsed / 60, 1), "holder_at_start": holder,
        "vip_moves": max(0, len(holders) - 1), "holders_seen": holders,
        "failed_requests": {"fresh": clients["fresh"]["failures"], "keepalive": clients["keepalive"]["failures"]},
        "requests": {"fresh": clients["fresh"]["probes"], "keepalive": clients["keepalive"]["probes"]},
        "keepalive_connects": clients["keepalive_connects"], "nodes": nodes,
    }


async def run_lab(args, ns: str, home: Path, raw: dict, flags: dict, kind: str) -> list[dict]:
    # On TCG VMs the fresh client asks HAProxy's whoami (VIP:8405): the stand-in API cannot answer
    # a TLS handshake every 20 ms there (as in the side-by-side benchmark); keep-alive asks the API.
    lab = BenchLab(kind=kind, ns=ns, home=home, config_path=home / "cluster.yaml", raw=raw, flags=flags,
                   log=lambda m: print(m, file=sys.stderr, flush=True),
                   fresh_target="whoami" if kind == "vm" else "api", interval=0.05 if kind == "vm" else 0.02)
    results = []
    try:
        await lab.up()
        for config in args.configs:
            vrrp = {"realtime": False} if args.no_realtime else {}
            lab.log(f"soak: {config} {vrrp or ''} for {args.minutes} min under full CPU load")
            result = await soak(lab, config, vrrp, args.minutes)
            lab.log(json.dumps(result))
            results.append(result)
    finally:
        await lab.down()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--lab", choices=("nspawn", "vm"), default="nspawn")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--configs", nargs="+", choices=(*PROFILES, "kubitect"), default=[DEFAULT_PROFILE])
    parser.add_argument("--no-realtime", action="store_true", help="profiles with realtime: false (to compare)")
    parser.add_argument("--net", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, containers or libvirtd)")
    args.net = args.net or ("10.95.0" if args.lab == "nspawn" else "10.96.0")
    if args.lab == "nspawn":
        import nodes_lab
        import sshd_lab

        rootfs = nodes_lab.nspawn_rootfs("keepalived", "haproxy", "openssl")
        with sshd_lab.lab_netns("kbs-") as ns:
            os.environ[sshd_lab.LAB_MARK_ENV] = ns
            home = Path(tempfile.mkdtemp(prefix="kbs-home-"))
            raw = cluster_config("nspawn", f"kbs-{ns[-6:]}", args.net, bridge=f"kb{ns[-6:]}")
            with sshd_lab.entered_netns(ns):
                results = asyncio.run(run_lab(args, ns, home, raw, {"nspawn_rootfs": str(rootfs)}, "nspawn"))
    else:
        import sshd_lab
        import vm_lab

        image = vm_lab.lb_image()
        home = Path(tempfile.mkdtemp(prefix="kbs9-home-"))
        with vm_lab.bridge_lab("soak", "kbs9-", "kbs9br0", f"{args.net}.1/24") as lab:
            raw = cluster_config("vm", "kbs9-soak", args.net, image=image.qcow2, pools=home / "pools",
                                 bridge="kbs9br0")
            with sshd_lab.entered_netns(lab.netns):
                results = asyncio.run(run_lab(args, lab.netns, home, raw, {}, "vm"))
    for r in results:
        failed = r["failed_requests"]
        print(f"{args.lab} soak, {r['vrrp']}, {r['minutes']} min, both load balancers at full CPU: "
              f"VIP moves {r['vip_moves']}, failed requests {failed['fresh']} fresh / {failed['keepalive']} "
              f"keep-alive (of {r['requests']['fresh']} / {r['requests']['keepalive']}), keep-alive reconnects "
              f"{r['keepalive_connects'] - 1}")
        for name, n in r["nodes"].items():
            print(f"  {name}: MASTER entered {n['entered_master']}x, FAULT {n['entered_fault']}x, timer expired "
                  f"{n['timer_expired']}x, load {n['loadavg']} on {n['cpus']} CPUs, busy loops {n['hog_cpu_s']} CPU s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"lab": args.lab, "fresh_target": "whoami" if args.lab == "vm" else "api",
                                         "results": results}, indent=1))
    return 0 if all(r["vip_moves"] == 0 and not any(r["failed_requests"].values()) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
