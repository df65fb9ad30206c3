"""Three clients of the VIP at once, as one program: what the failover benchmark and the soak run.

- `fresh`: a TLS `GET /readyz` through VIP:6443 on a new connection every 20 ms
  (kubitect_core.failover.Prober): the network's gap (`--fresh-target whoami`: a plain request to
  HAProxy's whoami frontend instead, for labs too slow for 50 TLS handshakes a second).
- `keepalive`: the same request on one kept-open connection, reconnecting after an error
  (kubitect_core.failover_keepalive.KeepAliveProber): what kubectl and kubelets see.
- `holder`: a plain `GET /` on VIP:8405 every 20 ms, answered by the HAProxy whoami frontend of
  the load balancer that holds the VIP: when and to whom the VIP moved.

Used by the failover benchmark, the soak (bench/) and the reload lab test. Run it where a client
of the cluster sits (the labs: inside the lab namespace, on the node bridge). It prints `ready`
once every stream has had an answer, then one JSON line when it stops: after `--min-seconds`
once every stream has answered for `--settle` s since its last failure, or after
`--max-seconds`. Times are `time.monotonic()` of this machine, so a caller on the same machine
can relate them to the moment it injected a fault.

    python -m kubitect_core.failover_streams VIP --min-seconds 4 --max-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import sys
import time
from collections import Counter

from kubitect_core.failover import PROBE_TIMEOUT_S, FailoverResult, Probe, Prober, outages
from kubitect_core.failover_keepalive import KeepAliveProber

# Defaults of --api-port and --whoami-port: the endpoint's port and the port on the VIP that names
# its holder, as keepalived-haproxy records them (`port`, `whoami_port` of its record).
API_PORT = 6443
WHOAMI_PORT = 8405


def summarize(probes: list[Probe], since: float) -> dict:
    """Outages of one stream from `since` on, as FailoverResult's dict plus the windows."""
    seen = [p for p in probes if p.done >= since]
    res = FailoverResult(len(seen), sum(not p.ok for p in seen), outages(seen), since)
    out = res.as_dict()
    out["windows"] = [[s, e] for s, e in res.outages]
    out["errors"] = dict(Counter(p.detail or "?" for p in seen if not p.ok))  # what the failures were
    return out


def holder_changes(probes: list[Probe], since: float) -> list[list]:
    """[time, name] each time a different load balancer answered (the first entry: who held it)."""
    out: list[list] = []
    for p in sorted(probes, key=lambda p: p.sent):
        if p.done < since or not p.ok:
            continue
        if not out or out[-1][1] != p.detail:
            out.append([p.done, p.detail])
    return out


def longest_outage_ms(windows: list, since: float) -> float | None:
    """A client's gap for a fault sent at `since`: its longest outage among those that end after
    then (0: none; None: one never recovered). An outage that ended before the fault is the lab's
    noise (an emulated VM drops the odd request on its own), not the fault's; of several after it,
    the longest is the fault's, whatever came first."""
    gaps = [None if end is None else (end - start) * 1000 for start, end in windows if end is None or end >= since]
    if any(g is None for g in gaps):
        return None
    return round(max(gaps), 1) if gaps else 0.0


def settled(probes: list[Probe], now: float, settle: float, in_flight: set[float] | frozenset = frozenset()) -> bool:
    """The stream answers and has not failed for `settle` s, and no request sent in that time is
    still unanswered (it may yet fail: a request is judged only its timeout after its send)."""
    recent = [p for p in probes if p.done >= now - settle]
    return (bool(recent) and all(p.ok for p in recent) and any(p.ok for p in probes[-3:])
            and not any(t >= now - settle for t in in_flight))


async def _stdin_line() -> None:
    """Returns when a line (or EOF) arrives on stdin: the caller's "stop now"."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(vip: str, *, min_seconds: float, max_seconds: float, settle: float, interval: float,
              ready_timeout: float, report_every: float | None = None, until_stdin: bool = False,
              timeout: float = PROBE_TIMEOUT_S, fresh_target: str = "api", wait_go: bool = False,
              api_port: int = API_PORT, whoami_port: int = WHOAMI_PORT) -> dict:
    if fresh_target == "whoami":  # HAProxy answers itself: no TLS handshake, no API server per request
        fresh = Prober(vip, whoami_port, path="/", interval=interval, plain=True, timeout=timeout)
    else:
        fresh = Prober(vip, api_port, interval=interval, timeout=timeout)
    holder = Prober(vip, whoami_port, path="/", interval=interval, plain=True, timeout=timeout)
    keep = KeepAliveProber(vip, api_port, interval=interval)
    for stream in (fresh, holder, keep):
        stream.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not all(any(p.ok for p in s.probes) for s in (fresh, holder, keep)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{vip} did not answer every stream within {ready_timeout} s")
            await asyncio.sleep(interval)
        mark = time.monotonic()
        print("ready", flush=True)
        go = mark
        if wait_go:  # the caller says when its fault is in: the waiting times count from then
            try:
                await asyncio.wait_for(_stdin_line(), max_seconds)
            except TimeoutError:  # a caller that never says go still gets its record, marked
                print(f"no go on stdin within {max_seconds:g} s; counting from now", file=sys.stderr, flush=True)
            go = time.monotonic()
        told = asyncio.ensure_future(_stdin_line()) if until_stdin else None
        next_report = mark + report_every if report_every else None
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if next_report and now >= next_report:  # a long soak says how it goes
                next_report += report_every
                moves = len(holder_changes(holder.probes, mark)) - 1
                failed = sum(not p.ok for s in (fresh, keep) for p in s.probes if p.done >= mark)
                print(json.dumps({"progress_s": round(now - mark), "moves": moves, "failed": failed}),
                      file=sys.stderr, flush=True)
            if now - go >= max_seconds or (told is not None and told.done()):
                break
            if told is None and now - go >= min_seconds and all(
                    settled(s.probes, now, settle, getattr(s, "in_flight", frozenset()))
                    for s in (fresh, holder, keep)):
                break
    finally:
        stopping = asyncio.ensure_future(asyncio.gather(fresh.stop(), holder.stop(), keep.stop()))
        _done, pending = await asyncio.wait([stopping], timeout=10)
        if pending:  # say what hangs; the record is complete anyway (see main)
            print(f"clients did not stop within 10 s; pending: {len(asyncio.all_tasks())} tasks", file=sys.stderr)
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
    return {"mark": mark, "go": go, "fresh": summarize(fresh.probes, mark), "keepalive": summarize(keep.probes, mark),
            "keepalive_connects": keep.connects, "holder": summarize(holder.probes, mark),
            "holders": holder_changes(holder.probes, mark), "prober_stalls": [list(x) for x in fresh.stalls]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubitect_core.failover_streams",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("vip")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT_S,
                        help="a fresh request unanswered this long counts as failed (default: short, to time "
                             "gaps; use ~1 s to count only requests a client would see fail)")
    parser.add_argument("--ready-timeout", type=float, default=15.0)
    parser.add_argument("--report-every", type=float, default=None, help="progress line on stderr every N s")
    parser.add_argument("--fresh-target", choices=("api", "whoami"), default="api",
                        help="what the fresh-connection client asks: the API through VIP:6443 (TLS), or HAProxy's "
                             "whoami frontend on VIP:8405 (plain; for emulated VMs, where a TLS API server per "
                             "request every 20 ms is more than the stand-in API can answer)")
    parser.add_argument("--api-port", type=int, default=API_PORT, help="the endpoint's API port (recorded `port`)")
    parser.add_argument("--whoami-port", type=int, default=WHOAMI_PORT,
                        help="the port on the VIP that names its holder (recorded `whoami_port`)")
    parser.add_argument("--wait-go", action="store_true",
                        help="after `ready`, wait for a line on stdin (the fault is in); "
                             "--min-seconds and --max-seconds count from then")
    parser.add_argument("--until-stdin", action="store_true",
                        help="run until a line (or EOF) arrives on stdin, or --max-seconds")
    args = parser.parse_args(argv)
    # A prober that cannot stop says where it hangs (and exits) instead of stalling its caller.
    # Its budget: getting ready, the wait for go (as long as a run at most), the run, stopping.
    faulthandler.dump_traceback_later(
        args.ready_timeout + args.max_seconds * (2 if args.wait_go else 1) + 15, exit=True)
    loop = asyncio.new_event_loop()
    out = loop.run_until_complete(run(args.vip, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                                      settle=args.settle, interval=args.interval, ready_timeout=args.ready_timeout,
                                      report_every=args.report_every, until_stdin=args.until_stdin,
                                      timeout=args.timeout, fresh_target=args.fresh_target,
                                      wait_go=args.wait_go, api_port=args.api_port,
                                      whoami_port=args.whoami_port))
    print(json.dumps(out), flush=True)
    # Not asyncio.run: its clean-up waits for every leftover task, and a stuck TLS handshake
    # (failover.Prober.stop) would hold the result's reader forever. The result is out; leave.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
