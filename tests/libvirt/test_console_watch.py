"""The boot watchdog (`readiness.watch_console`): a guest kubitect started whose serial console
stays silent is reset, a few times at most; a console that speaks ends the watch; a guest QEMU
paused on a disk I/O error fails at once; a guest paused by someone else is left alone.

The domains are libvirt's test driver's (real API calls: state, suspend, resume, reset). The
test driver runs no guest, so the console log is a file the test writes (what QEMU's serial
`<log>` would hold), and a SPY around the driver's domain counts resets and can report the one
state the test driver cannot enter (paused on an I/O error). The real guest path runs in the
e2e tier (tests/e2e: every started VM is watched).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import libvirt
import pytest
from kubitect_plugins.libvirt.connection import HostConnection
from kubitect_plugins.libvirt.readiness import NotReady, ready_watched, watch_console

pytestmark = pytest.mark.libvirt

DOMAIN = "test"  # the running domain test:///default starts with


class SpyDomain:
    """The test driver's domain, with resets counted (and, on request, the guest "booting" on a
    reset: its console log gets a line) and a state override."""

    def __init__(self, dom: libvirt.virDomain, log: Path, *, speaks_after_reset: bool = False):
        self.dom, self.log, self.speaks_after_reset = dom, log, speaks_after_reset
        self.resets = 0
        self.state_override: list[int] | None = None

    def state(self) -> list[int]:
        return self.state_override or self.dom.state()

    def reset(self, flags: int = 0) -> int:
        self.resets += 1
        if self.speaks_after_reset:
            self.log.write_text("[    0.000000] Linux version 6.1.0\n")
        return self.dom.reset(flags)


class SpyHost(HostConnection):
    """A test-driver host whose `call` hands the watched code a connection returning the spy."""

    def __init__(self, spy_factory):
        super().__init__("lab", "test:///default")
        self.spy = None
        self._factory = spy_factory

    async def call(self, fn):
        real = await super().call(lambda c: c)
        if self.spy is None:
            self.spy = self._factory(real.lookupByName(DOMAIN))
        spy = self.spy

        class Conn:
            def lookupByName(self, name):  # noqa: N802 - libvirt's name
                assert name == DOMAIN
                return spy

        return await super().call(lambda _c: fn(Conn()))


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "test-serial.log"
    path.write_bytes(b"")  # QEMU truncates it at start
    return path


@pytest.fixture
def host(log):
    """Makes the spied test-driver host (`host(**SpyDomain options)`); closes it afterwards."""
    made: list[SpyHost] = []

    def _make(**kw) -> SpyHost:
        made.append(SpyHost(lambda dom: SpyDomain(dom, log, **kw)))
        return made[-1]

    yield _make
    for hc in made:
        hc.close()


def _watch(hc: SpyHost, log: Path, messages: list[str], **kw):
    return watch_console(hc, DOMAIN, log=str(log), silent_after=0.2, poll=0.02, progress=messages.append, **kw)


def test_a_silent_running_guest_is_reset_at_most_twice(log, host):
    hc, messages = host(), []
    done = asyncio.run(_watch(hc, log, messages))
    assert done == 2 and hc.spy.resets == 2
    assert [m.split(": ")[-1] for m in messages] == ["resetting it (1 of 2)", "resetting it (2 of 2)"]
    assert "console stayed silent 0 s after start" in messages[0]
    assert hc.conn.lookupByName(DOMAIN).state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_the_watch_ends_when_the_console_speaks(log, host):
    hc, messages = host(speaks_after_reset=True), []
    assert asyncio.run(_watch(hc, log, messages)) == 1 and hc.spy.resets == 1
    hc.spy.resets = 0
    log.write_text("[    0.000000] Linux version\n")
    assert asyncio.run(_watch(hc, log, messages)) == 0 and hc.spy.resets == 0


def test_a_disk_io_error_pause_fails_at_once_naming_the_cause(log, host):
    hc = host()

    async def scenario():
        await hc.call(lambda c: c.lookupByName(DOMAIN))  # makes the spy
        hc.spy.state_override = [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR]
        started = time.monotonic()
        with pytest.raises(NotReady) as err:
            await _watch(hc, log, [])
        return err.value, time.monotonic() - started

    err, took = asyncio.run(scenario())
    assert "disk I/O error" in str(err) and "disk full" in str(err) and took < 0.2
    assert hc.spy.resets == 0


def test_a_guest_paused_by_someone_else_is_not_reset(log, host):
    hc = host()

    async def scenario():
        await hc.call(lambda c: c.lookupByName(DOMAIN).dom.suspend())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_watch(hc, log, []), 0.6)  # 3x the silence limit
        assert hc.spy.resets == 0
        await hc.call(lambda c: c.lookupByName(DOMAIN).dom.resume())
        return await _watch(hc, log, [], resets=1)

    assert asyncio.run(scenario()) == 1 and hc.spy.resets == 1


def test_ready_watched_ends_the_wait_on_the_watch_error_and_stops_the_watch_when_ready():
    cancelled = []

    async def never_ready():
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.append("ready")

    async def failing_watch():
        await asyncio.sleep(0.05)
        raise NotReady("paused on an I/O error")

    async def endless_watch():
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.append("watch")

    async def ready_soon():
        await asyncio.sleep(0.05)
        return "ok"

    async def scenario():
        started = time.monotonic()
        with pytest.raises(NotReady):
            await ready_watched(never_ready(), failing_watch())
        assert time.monotonic() - started < 1
        assert await ready_watched(ready_soon(), endless_watch()) == "ok"

    asyncio.run(scenario())
    assert cancelled == ["ready", "watch"]
