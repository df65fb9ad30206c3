"""The fresh-connection prober (kubitect_core.failover.Prober) against real TCP on loopback: a
request whose SYN is lost counts as failed (not as a late success after the kernel's 1 s
retransmission), and a prober that is itself descheduled fails no request the server answered,
reports the stall, and sends no catch-up burst afterwards."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from kubitect_core.failover import PROBE_TIMEOUT_S, STALL_S, FailoverResult, Prober, readyz

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlb-1"


def _answer(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(4096)
            if not more:
                return
            data += more
        conn.sendall(ANSWER)


class SynDroppingServer:
    """A listener whose accept queue is full until `opens_after` s: Linux drops the SYNs it gets
    meanwhile (a SYN lost at a switch-over), the client retransmits after its initial RTO (1 s)."""

    def __init__(self, opens_after: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(2):  # fill the queue (backlog 0 holds one); the rest are dropped SYNs
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
        time.sleep(0.05)
        self.opens_after = opens_after
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        time.sleep(self.opens_after)
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for c in self.fillers:
            c.close()
        self.sock.close()


@pytest.fixture
def syn_dropping():
    server = SynDroppingServer(opens_after=0.3)
    yield server
    server.close()


def test_a_request_whose_syn_was_lost_fails_instead_of_succeeding_after_the_retransmission(syn_dropping):
    t0 = time.monotonic()
    ok, detail = asyncio.run(readyz("127.0.0.1", syn_dropping.port, path="/", timeout=PROBE_TIMEOUT_S, plain=True))
    took = time.monotonic() - t0
    assert (ok, detail) == (False, "TimeoutError"), "a SYN sent into the gap must count as a failed request"
    assert took < 1.0, f"the request was judged after {took:.2f} s, at or after TCP's first SYN retransmission"


def test_the_same_request_with_a_timeout_past_the_initial_rto_hides_the_outage(syn_dropping):
    """What a longer timeout (or a sequential client's connect) measures: the server was open
    again after 0.3 s, yet the request succeeds only when the SYN is retransmitted, ~1 s later."""
    t0 = time.monotonic()
    ok, detail = asyncio.run(readyz("127.0.0.1", syn_dropping.port, path="/", timeout=3.0, plain=True))
    took = time.monotonic() - t0
    assert ok and detail == "lb-1", detail
    assert took >= 0.95, f"answered after {took:.2f} s: the SYN was not dropped, the scenario did not happen"


def test_a_descheduled_prober_fails_no_request_and_reports_the_stall():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def go() -> tuple[FailoverResult, Prober, float]:
        async with Prober("127.0.0.1", port, path="/", plain=True) as prober:
            await prober.wait_ready(5)
            prober.mark()
            await asyncio.sleep(0.2)
            blocked = time.monotonic()
            time.sleep(0.6)  # the vantage point is not scheduled (a loaded emulated VM)
            await asyncio.sleep(0.5)
            return prober.result(), prober, blocked

    try:
        res, prober, blocked = asyncio.run(go())
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert res.failures == 0 and res.outages == [], [p for p in prober.probes if not p.ok]
    assert res.stalls and max(b - a for a, b in res.stalls) >= 0.5, res.stalls
    assert res.as_dict()["prober_stalls"] == len(res.stalls) and res.as_dict()["prober_stall_max_ms"] >= 500
    after = [p for p in prober.probes if blocked + 0.6 <= p.sent < blocked + 0.7]
    assert len(after) <= 0.1 / prober.interval + 2, f"{len(after)} requests in the 0.1 s after the stall: a burst"
    assert STALL_S < 0.6


def test_stall_inside_an_outage_is_measured():
    res = FailoverResult(10, 3, [(1.0, 2.0)], 0.5, [(0.2, 0.4), (1.5, 1.8), (1.9, 2.5)])
    assert res.stall_in_outages_ms == pytest.approx(400.0)
    assert res.as_dict()["prober_stall_in_outage_ms"] == pytest.approx(400.0)


def test_a_stream_is_not_settled_while_a_request_sent_in_the_settle_window_is_unanswered():
    from kubitect_core.failover import Probe
    from kubitect_core.failover_streams import settled

    probes = [Probe(t / 10, t / 10 + 0.005, True, "lb-2") for t in range(10, 20)]
    assert settled(probes, now=2.0, settle=0.5)
    assert not settled(probes, now=2.0, settle=0.5, in_flight={1.8}), "an unjudged request may still fail"
    assert settled(probes, now=2.0, settle=0.5, in_flight={1.2}), "one sent before the window does not hold it up"
