"""A client that holds one keep-alive connection through the VIP, as kubectl and kubelets do.

The fresh-connection prober (`kubitect_core.failover.Prober`) measures the network's gap: every
request opens a new connection, so it succeeds as soon as the VIP answers again. A real API
client keeps its TLS connection open. When the VIP moves, that connection is dead: its next
packet reaches the new holder, which answers with a reset, but only when TCP retransmits it
(200 ms at the earliest), or the old holder's HAProxy died and closed it. Only then does the
client reconnect, and a SYN sent into the gap is retried after 1 s. So this client's gap is the
network's gap plus what TCP adds; the benchmark reports both (day2-and-fast-failover.md 1.4).

Behaviour: one request at a time on one connection (HTTP/1.1, `GET /readyz`, TLS unless
`plain`), the next one `interval` s after the last answer. Any error (reset, EOF, a request
unanswered for `timeout` s) closes the connection; the next request dials a new one (connect
timeout `timeout`, the kernel's SYN retries included). Every request is recorded as a
`failover.Probe`, so the same outage arithmetic applies.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from kubitect_core.failover import Probe, _tls_context

# A client gives up a request it got no answer to after this long and reconnects. Long enough
# that TCP's own retransmissions (200 ms, 400 ms, ...) decide what the client sees.
KEEPALIVE_TIMEOUT_S = 2.0


class KeepAliveProber:
    """Requests `path` on one kept-open connection every `interval` s; reconnects after an error."""

    def __init__(self, host: str, port: int = 6443, *, path: str = "/readyz", interval: float = 0.02,
                 timeout: float = KEEPALIVE_TIMEOUT_S, plain: bool = False) -> None:
        self.host, self.port, self.path, self.plain = host, port, path, plain
        self.interval, self.timeout = interval, timeout
        self.probes: list[Probe] = []
        self.connects = 0
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._task: asyncio.Task | None = None
        self._tls: ssl.SSLContext | None = None if plain else _tls_context()

    def start(self) -> None:
        """Begin on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop after the request in flight (bounded by `timeout`) and close the connection."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def _request(self) -> tuple[bool, str]:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port, ssl=self._tls)
            self.connects += 1
        reader, writer = self._conn
        writer.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await reader.readexactly(length) if length else b""
        if b"connection: close" in head.lower():
            self._close()
        ok = head.startswith(b"HTTP/1.") and head[9:12] == b"200"
        return ok, (body.decode(errors="replace").strip()[:64] if ok else head[:40].decode(errors="replace"))

    async def _run(self) -> None:
        while True:
            sent = time.monotonic()
            try:
                ok, detail = await asyncio.wait_for(self._request(), self.timeout)
            except (TimeoutError, OSError, ssl.SSLError, EOFError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError) as exc:
                ok, detail = False, type(exc).__name__
            if not ok:
                self._close()
            self.probes.append(Probe(sent, time.monotonic(), ok, detail))
            await asyncio.sleep(self.interval)
