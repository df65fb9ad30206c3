"""The VIP clients program (kubitect_core.failover_streams): the arithmetic that turns probes into a
fault's gap, and the `--wait-go` handshake the failover benchmark relies on, against a real TLS
and a plain HTTP server on a loopback address of the test's own (127.0.0.0/8 needs no setup)."""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import ssl
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubitect_core.failover import Probe
from kubitect_core.failover_streams import holder_changes, longest_outage_ms, settled, summarize


def test_longest_outage_ignores_outages_that_ended_before_the_fault():
    noise, fault = (1.0, 1.05), (10.0, 10.3)
    assert longest_outage_ms([list(noise), list(fault)], since=9.9) == 300.0
    assert longest_outage_ms([list(noise)], since=9.9) == 0.0, "only noise before the fault: no gap"
    assert longest_outage_ms([], since=0) == 0.0


def test_longest_outage_counts_one_open_when_the_fault_came_and_the_longest_after_it():
    # the fault lands inside an outage already running: that outage is the fault's
    assert longest_outage_ms([[9.8, 10.4]], since=10.0) == pytest.approx(600.0)
    # a short blip first, the long one later: the long one is the fault's
    assert longest_outage_ms([[10.1, 10.15], [10.2, 11.0]], since=10.0) == pytest.approx(800.0)


def test_longest_outage_is_none_while_a_client_never_recovered():
    assert longest_outage_ms([[10.1, 10.2], [10.5, None]], since=10.0) is None


def _probes(*spec: tuple[float, bool, str]) -> list[Probe]:
    return [Probe(t, t + 0.005, ok, detail) for t, ok, detail in spec]


def test_summary_and_holders_start_at_the_mark():
    probes = _probes((0.0, False, "refused"), (1.0, True, "lb-1"), (1.1, False, "reset"), (1.2, False, "reset"),
                     (1.3, True, "lb-2"), (1.4, True, "lb-2"))
    out = summarize(probes, since=0.5)
    assert out["failures"] == 2 and out["errors"] == {"reset": 2}, "the failure before the mark is not counted"
    assert out["windows"] == [[1.1, pytest.approx(1.305)]]
    assert [name for _t, name in holder_changes(probes, since=0.5)] == ["lb-1", "lb-2"]
    assert settled(probes, now=1.5, settle=0.15) and not settled(probes, now=1.5, settle=0.5)


def _cert(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "standin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    crt, pem = tmp_path / "api.crt", tmp_path / "api.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


class _Backend:
    """What sits behind a VIP here: answers 200 with its name, or 503 while `down` (the fault)."""

    def __init__(self) -> None:
        self.down = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b"lb-1" if not self.down else b"down"
                status = b"503 Service Unavailable" if self.down else b"200 OK"
                close = b"connection: close" in head.lower()
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                             + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n" + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


def test_wait_go_counts_from_the_go_and_keeps_the_outage_before_it(tmp_path):
    """The benchmark starts the clients, injects its fault (which may take a while: a VM's link cut
    over SSH), then says go: the clients must wait for it, count their minimum run from it, and
    still report the outage the fault caused before it."""
    vip = f"127.{random.randint(64, 250)}.{random.randint(0, 250)}.{random.randint(2, 250)}"
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*_cert(tmp_path))
    backend = _Backend()

    async def scenario() -> tuple[dict, float, float]:
        api = await asyncio.start_server(backend.handle, vip, 6443, ssl=tls)
        whoami = await asyncio.start_server(backend.handle, vip, 8405)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubitect_core.failover_streams", vip, "--wait-go", "--min-seconds", "0.3",
            "--max-seconds", "10", "--settle", "0.2", "--timeout", "1",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert ready.strip() == b"ready", await proc.stderr.read()
            fault = time.monotonic()
            backend.down = True  # the fault, and the caller's slow injection of it
            await asyncio.sleep(0.5)
            backend.down = False
            await asyncio.sleep(0.7)
            assert proc.returncode is None, "the clients stopped before they were told go"
            go = time.monotonic()
            out, err = await asyncio.wait_for(proc.communicate(b"go\n"), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
            api.close()
            whoami.close()
        assert proc.returncode == 0, err.decode()[-2000:]
        return json.loads(out.decode().splitlines()[-1]), fault, go

    result, fault, go = asyncio.run(scenario())
    assert result["go"] >= go > result["mark"]
    for client in ("fresh", "keepalive"):
        gap = longest_outage_ms(result[client]["windows"], fault)
        assert gap is not None and 400 <= gap <= 900, (client, result[client])
    assert [name for _t, name in result["holders"]] == ["lb-1"]
