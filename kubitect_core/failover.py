"""Measured VIP failover: a prober that watches the API endpoint while a fault is injected.

Used by the load balancer lab tests and by the conformance suite (issue 8). The prober runs
where a client of the cluster would be (outside the load balancers), sends a TLS `GET /readyz`
through VIP:port every ~20 ms (each request on a fresh connection, certificate not verified,
timeout just under TCP's first SYN retransmission, several in flight so a hanging request never
stalls the cadence) and records every
request's send time, completion time and outcome on the monotonic clock. The gap of an outage is
from the first failed request's send time to the completion of the first successful request
sent after it; that is what a client sees.

What a fault may cost is the load balancer's to declare (its record's `failover.budgets`, e.g.
kubitect_plugins.keepalived_haproxy.budgets from the VRRP timers); this module only measures.

Run it inside a network namespace as a program: `ip netns exec NS python -m kubitect_core.failover
probe VIP --port 6443` prints `ready` after the first success, then one JSON line when the
endpoint has failed and recovered (or `--max-seconds` passed). `holder VIP --port P` prints the name
of the node answering for the VIP on its whoami port P.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import time
from dataclasses import dataclass, field

PROBE_INTERVAL_S = 0.02
# A request counts as failed when refused, reset, or unanswered this long. Just under TCP's
# initial retransmission timeout (1 s, RFC 6298): a SYN lost in the gap is never retried within
# a request's life, so that request fails and the outage is seen; while a prober on a loaded
# (emulated) node that is descheduled for less than this does not fail requests the VIP did
# answer. The gap does not grow with it: an outage ends at the completion of the first success
# *sent after* the first failure, and requests go out every PROBE_INTERVAL_S regardless.
PROBE_TIMEOUT_S = 0.9
# The prober's own loop counts as stalled when a send is this late (it was not scheduled):
# reported with the result, so a gap can be told apart from a vantage point that stood still.
STALL_S = 0.1
# Added to every timer-derived budget: ARP/GARP propagation, process scheduling on a busy
# 2-core host, the prober's own 20 ms cadence and TLS handshake. Stated once, used everywhere.
DEFAULT_MARGIN_S = 0.5


@dataclass(frozen=True)
class Probe:
    sent: float  # time.monotonic() when the request started
    done: float  # when it succeeded or failed
    ok: bool
    detail: str = ""  # response body (the answering server's name) or the error


@dataclass
class FailoverResult:
    """What the prober saw: outages as (start, end) monotonic pairs; end None = not recovered."""

    probes: int
    failures: int
    outages: list[tuple[float, float | None]] = field(default_factory=list)
    mark: float | None = None  # when the fault was injected (Prober.mark)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # the prober's own, (from, to)

    @property
    def recovered(self) -> bool:
        """True when every outage ended (an outage still open means the endpoint is down)."""
        return all(end is not None for _, end in self.outages)

    @property
    def gap_ms(self) -> float:
        """Length of the longest outage in ms (0 when no request failed); inf when not recovered.

        The longest, not the first: on emulated or busy machines one request may time out just
        before the fault takes effect, and that blip must not stand in for what the fault cost.
        """
        if not self.outages:
            return 0.0
        if any(end is None for _, end in self.outages):
            return float("inf")
        return max((end - start) * 1000 for start, end in self.outages)

    @property
    def total_outage_ms(self) -> float:
        """All outages added up: more than gap_ms means the VIP flapped after the first recovery."""
        return sum(((end if end is not None else start) - start) * 1000 for start, end in self.outages)

    def as_dict(self) -> dict:
        """JSON-able summary for reports."""
        return {"gap_ms": None if self.gap_ms == float("inf") else round(self.gap_ms, 1),
                "recovered": self.recovered, "outages": len(self.outages),
                "total_outage_ms": round(self.total_outage_ms, 1), "probes": self.probes,
                "failures": self.failures, "prober_stalls": len(self.stalls),
                "prober_stall_max_ms": round(max(((b - a) * 1000 for a, b in self.stalls), default=0.0), 1),
                "prober_stall_in_outage_ms": round(self.stall_in_outages_ms, 1)}

    @property
    def stall_in_outages_ms(self) -> float:
        """How long the prober itself stood still inside its outage windows (0 on a healthy
        vantage point): a gap that is mostly this was the client's machine, not the VIP."""
        total = 0.0
        for start, end in self.outages:
            stop = end if end is not None else max((b for _, b in self.stalls), default=start)
            total += sum(max(0.0, min(b, stop) - max(a, start)) for a, b in self.stalls)
        return total * 1000


def outages(probes: list[Probe]) -> list[tuple[float, float | None]]:
    """Outage windows: first failure's send time to the completion of the first success sent after it."""
    ordered = sorted(probes, key=lambda p: p.sent)
    windows: list[tuple[float, float | None]] = []
    i = 0
    while i < len(ordered):
        if ordered[i].ok or (windows and windows[-1][1] is not None and ordered[i].sent < windows[-1][1]):
            i += 1
            continue
        start = ordered[i].sent
        later_ok = [p.done for p in ordered[i + 1:] if p.ok and p.sent > start]
        end = min(later_ok) if later_ok else None
        windows.append((start, end))
        if end is None:
            break
        i += 1
        while i < len(ordered) and ordered[i].sent < end:
            i += 1
    return windows


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the API server's cert may be self-signed; we test reachability
    return ctx


async def readyz(host: str, port: int = 6443, *, path: str = "/readyz", timeout: float = PROBE_TIMEOUT_S,
                 tls: ssl.SSLContext | None = None, plain: bool = False) -> tuple[bool, str]:
    """One request on a fresh connection (TLS unless `plain`): (status was 200, body or error).

    `plain` is for targets without TLS, such as HAProxy's whoami frontend when no API server
    sits behind the VIP yet: the same cadence and outage arithmetic, only without the handshake.
    """
    tls = None if plain else (tls or _tls_context())

    async def go() -> tuple[bool, str]:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            try:
                while len(data) < 65536:  # Connection: close - the server ends the response with EOF
                    more = await reader.read(4096)
                    if not more:
                        break
                    data += more
            except (ssl.SSLError, ConnectionResetError):
                if b"\r\n\r\n" not in data:  # an unclean close after a full response still counts
                    raise
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        ok = head.startswith(b"HTTP/1.") and head[9:12] == b"200"
        return ok, body.decode(errors="replace").strip()[:64] if ok else head[:40].decode(errors="replace")

    try:
        return await asyncio.wait_for(go(), timeout)
    except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
        return False, type(exc).__name__


class Prober:
    """Sends a TLS GET /readyz to host:port every `interval` s until stopped; keeps every outcome.

    Use as `async with Prober(vip) as p: await p.wait_ready(); p.mark(); inject();
    result = await p.wait_recovered(10)`.
    """

    def __init__(self, host: str, port: int = 6443, *, path: str = "/readyz",
                 interval: float = PROBE_INTERVAL_S, timeout: float = PROBE_TIMEOUT_S,
                 max_in_flight: int = 64, plain: bool = False) -> None:
        self.host, self.port, self.path, self.plain = host, port, path, plain
        self.interval, self.timeout, self.max_in_flight = interval, timeout, max_in_flight
        self.probes: list[Probe] = []
        self.stalls: list[tuple[float, float]] = []
        self.in_flight: set[float] = set()  # send times of requests not answered yet
        self._mark: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._tls = _tls_context()

    async def __aenter__(self) -> Prober:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Begin probing in the background on the running event loop."""
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sending and wait for requests in flight, so the record is complete.

        The wait is bounded: a request lives at most `timeout`, but a TLS connection cancelled
        mid-handshake has been seen to never finish (Python 3.11), which must not stall the caller.
        """
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self.timeout + 2.0)
            for task in pending:
                task.cancel()

    async def _one(self) -> None:
        sent = time.monotonic()
        self.in_flight.add(sent)
        try:
            ok, detail = await readyz(self.host, self.port, path=self.path, timeout=self.timeout, tls=self._tls,
                                      plain=self.plain)
            self.probes.append(Probe(sent, time.monotonic(), ok, detail))
        finally:
            self.in_flight.discard(sent)

    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            if len(self._tasks) < self.max_in_flight:
                task = asyncio.create_task(self._one())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            if now - next_at > STALL_S:  # not scheduled in time: note it, and send no catch-up burst
                self.stalls.append((next_at, now))
                next_at = now

    def mark(self) -> float:
        """Note the moment the fault is injected (reported with the result)."""
        self._mark = time.monotonic()
        return self._mark

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait for a first successful request, so an outage measured later is a real change."""
        deadline = time.monotonic() + timeout
        while not any(p.ok for p in self.probes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.host}:{self.port} never answered {self.path} within {timeout} s")
            await asyncio.sleep(self.interval)

    def result(self) -> FailoverResult:
        """The outages seen so far (from the mark on, when one was set)."""
        probes = [p for p in self.probes if self._mark is None or p.done >= self._mark]
        stalls = [s for s in self.stalls if self._mark is None or s[1] >= self._mark]
        return FailoverResult(len(probes), sum(not p.ok for p in probes), outages(probes), self._mark, stalls)

    async def wait_recovered(self, timeout: float = 15.0, *, settle: float = 0.3,
                             quiet: float | None = None, min_seconds: float = 0.0,
                             injected: asyncio.Event | None = None) -> FailoverResult:
        """Wait until an outage has begun and ended and `settle` s of successes followed.

        Returns early with no outage when `quiet` s pass without any failure (a seamless
        handover); returns unrecovered at `timeout`. Never returns before `min_seconds` have
        passed since the injection ended (`injected` set, else since the call): a fault that takes
        effect late, or an injection that itself takes a while, is then still watched to its end.
        """
        start = time.monotonic()
        done_at: float | None = None if injected is not None else start
        while time.monotonic() - start < timeout:
            await asyncio.sleep(0.05)
            res = self.result()
            now = time.monotonic()
            if done_at is None and injected is not None and injected.is_set():
                done_at = now
            if done_at is None or now - done_at < min_seconds:
                continue
            if not res.outages:
                if quiet is not None and now - start >= quiet:
                    break
                continue
            last_end = res.outages[-1][1]
            if last_end is not None and now - last_end >= settle:
                pending_fail = [p for p in self.probes if not p.ok and p.sent > last_end]
                # a request sent in the settle window and still unanswered may yet fail (it is
                # judged only `timeout` after its send): wait for it rather than miss it
                unjudged = [t for t in self.in_flight if t <= last_end + settle]
                if not pending_fail and not unjudged:
                    break
        return self.result()


async def holder(vip: str, port: int, timeout: float = 0.5) -> str | None:
    """Which node answers for the VIP: a plain HTTP port the load balancer binds on the VIP only
    and answers with the node's name (keepalived-haproxy: its whoami frontend, recorded as
    `whoami_port`)."""
    ok, body = await readyz(vip, port, path="/", timeout=timeout, plain=True)
    return (body or None) if ok else None


def answer_runs(probes: list[Probe], since: float | None = None) -> list[list]:
    """Who answered, in order: [[answer, count], ...] over successful requests (sent after `since`).

    With HAProxy's whoami frontend the answer names the load balancer a request reached, so a
    run sequence like [lb-1, lb-2, lb-1] shows requests alternating between two holders.
    """
    runs: list[list] = []
    for p in sorted(probes, key=lambda p: p.sent):
        if not p.ok or (since is not None and p.sent < since):
            continue
        if runs and runs[-1][0] == p.detail:
            runs[-1][1] += 1
        else:
            runs.append([p.detail, 1])
    return runs


def summary(gaps_ms: list[float]) -> dict[str, float]:
    """min / median / max of measured gaps (ms), for reports."""
    return {"min": round(min(gaps_ms), 1), "median": round(statistics.median(gaps_ms), 1),
            "max": round(max(gaps_ms), 1), "runs": len(gaps_ms)}


async def _probe_main(args: argparse.Namespace) -> int:
    async with Prober(args.host, args.port, path=args.path, interval=args.interval,
                      timeout=args.timeout, plain=args.plain) as prober:
        await prober.wait_ready(args.ready_timeout)
        print("ready", flush=True)
        injected = None
        if args.go_on_stdin:
            # "go": the fault is being injected now (the mark); the next line: the injection
            # ended, from which --min-seconds count.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.readline)
            injected = asyncio.Event()

            async def second_line() -> None:
                await loop.run_in_executor(None, sys.stdin.readline)
                injected.set()

            reader = loop.create_task(second_line())
        prober.mark()
        res = await prober.wait_recovered(args.max_seconds, settle=args.settle, quiet=args.quiet,
                                          min_seconds=args.min_seconds, injected=injected)
        if injected is not None:
            reader.cancel()
    out = res.as_dict()
    out["mark"] = res.mark
    out["outage_windows"] = [[s, e] for s, e in res.outages]
    out["answers"] = answer_runs(prober.probes, res.mark)
    print(json.dumps(out), flush=True)
    return 0 if res.recovered else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry so the prober can run inside a namespace or on another machine."""
    parser = argparse.ArgumentParser(prog="python -m kubitect_core.failover")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="probe until an outage ended (prints 'ready', then JSON)")
    p.add_argument("host")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--path", default="/readyz")
    p.add_argument("--interval", type=float, default=PROBE_INTERVAL_S)
    p.add_argument("--timeout", type=float, default=PROBE_TIMEOUT_S)
    p.add_argument("--ready-timeout", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--settle", type=float, default=0.3)
    p.add_argument("--quiet", type=float, default=None, help="stop after this long without a failure")
    p.add_argument("--plain", action="store_true", help="plain HTTP instead of TLS")
    p.add_argument("--min-seconds", type=float, default=0.0, help="watch at least this long after the mark")
    p.add_argument("--go-on-stdin", action="store_true",
                   help="after 'ready', mark when a line arrives on stdin; --min-seconds count from the next line")
    h = sub.add_parser("holder", help="print the load balancer answering for the VIP")
    h.add_argument("vip")
    h.add_argument("--port", type=int, required=True, help="the load balancer's whoami port")
    args = parser.parse_args(argv)
    if args.cmd == "probe":
        return asyncio.run(_probe_main(args))
    name = asyncio.run(holder(args.vip, args.port))
    print(name or "")
    return 0 if name else 1


if __name__ == "__main__":
    sys.exit(main())
