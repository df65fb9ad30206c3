"""The keep-alive client of the failover measurements, against a real HTTP/1.1 server on loopback.

It must behave like kubectl's transport: one connection for every request while the server
keeps it, a new one only after an error, and every request recorded with its outcome, so the
outage arithmetic shared with the fresh-connection prober applies.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubitect_core.failover import outages
from kubitect_core.failover_keepalive import KeepAliveProber


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client closes

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"m1"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except OSError:  # the test cut the connection
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # a handler waits on a kept-open connection: never join it

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.connections: list[socket.socket] = []

    def get_request(self):
        conn, addr = super().get_request()
        self.connections.append(conn)
        return conn, addr


def _serve(port: int = 0) -> _Server:
    server = _Server(port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stop(server: _Server) -> None:
    server.shutdown()
    for conn in server.connections:  # what a dying load balancer does to open connections
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()
    server.server_close()


def test_one_connection_carries_every_request_and_an_outage_costs_one_reconnect():
    server = _serve()
    port = server.server_address[1]

    async def scenario():
        prober = KeepAliveProber("127.0.0.1", port, path="/readyz", interval=0.01, timeout=0.5, plain=True)
        prober.start()
        await asyncio.sleep(0.4)
        steady = (len(prober.probes), prober.connects, len(server.connections))
        _stop(server)  # the holder is gone: the kept connection dies, new ones are refused
        await asyncio.sleep(0.3)
        again = _serve(port)
        await asyncio.sleep(0.4)
        await prober.stop()
        _stop(again)
        return prober, steady, again

    prober, (requests, connects, accepted), again = asyncio.run(scenario())
    assert requests >= 5 and connects == 1 and accepted == 1, "keep-alive: every request on one connection"
    assert all(p.ok and p.detail == "m1" for p in prober.probes[:requests])
    windows = outages(prober.probes)
    assert len(windows) == 1 and windows[0][1] is not None, "one outage, recovered"
    assert 0.25 <= windows[0][1] - windows[0][0] <= 1.0
    assert len(again.connections) == 1, "after the outage one new connection carries the requests again"
    assert prober.probes[-1].ok
