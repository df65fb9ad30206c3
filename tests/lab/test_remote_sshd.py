"""kubitect_core.remote against a real sshd in a private network namespace (see sshd_lab.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sshd_lab
from sshd_lab import LabUser, Sshd, entered_netns

from kubitect_core import remote
from kubitect_core.remote import HostKeyChanged, NodePool, RemoteError

pytestmark = pytest.mark.lab

ADDR = "127.0.0.2"  # loopback of the lab namespace: reachable only from inside it
OPS = LabUser("kbt3ops", 61731, sudo=True)
NOSUDO = LabUser("kbt3nosudo", 61732, sudo=False)


@dataclass
class Lab:
    netns: str
    sshd: Sshd
    key: Path
    known_hosts: Path
    workdir: Path

    def run(self, coro_fn):
        """Runs an async scenario with this thread inside the lab namespace."""
        with entered_netns(self.netns):
            return asyncio.run(coro_fn())


@pytest.fixture
def lab(tmp_path):
    sshd_lab.require_lab(sshd_lab.SSHD, "sudo", "unshare", "ssh")
    workdir = sshd_lab.lab_workdir("kbt3-remote-")
    try:
        with sshd_lab.lab_netns("kbt3-") as ns:
            key = tmp_path / "id_ed25519"
            public = sshd_lab.write_keypair(key).export_public_key("openssh").decode()
            sshd = Sshd(ns, workdir / "sshd", ADDR, 22, public, users=[OPS, NOSUDO]).start()
            try:
                yield Lab(ns, sshd, key, tmp_path / "cluster" / "known_hosts", workdir)
            finally:
                sshd.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _args(lab: Lab, user: str = "root") -> dict:
    return dict(user=user, key=lab.key, known_hosts=lab.known_hosts)


def test_run_put_get_as_root(lab):
    payload = bytes(range(256)) * 4 + b"\x00end"
    target = lab.workdir / "files" / "payload.bin"

    async def scenario():
        async with await remote.connect(ADDR, name="kbt3-lb-1", **_args(lab)) as node:
            res = await node.run("echo out; echo err >&2; id -u")
            assert res.ok and res.stdout.split() == ["out", "0"] and res.stderr.strip() == "err"
            res = await node.run("cat; exit 3", check=False, input="fed via stdin")
            assert (res.exit_status, res.stdout) == (3, "fed via stdin")
            with pytest.raises(RemoteError) as err:
                await node.run("ls /kbt3-does-not-exist")
            await node.put(payload, str(target), mode=0o640)
            back = await node.get(str(target))
            with pytest.raises(RemoteError) as missing:
                await node.get(str(lab.workdir / "nope"))
            return err.value, back, missing.value

    err, back, missing = lab.run(scenario)
    assert "kbt3-lb-1" in str(err) and ADDR in str(err) and "ls /kbt3-does-not-exist" in str(err)
    assert "exited with 2" in str(err)
    assert back == payload
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["payload.bin"]  # no temp file left
    assert "get " in str(missing) and ADDR in str(missing)


def test_first_contact_pins_the_host_key_0600_once(lab):
    assert not lab.known_hosts.exists()

    async def scenario():
        for _ in range(2):
            node = await remote.connect(ADDR, **_args(lab))
            await node.close()

    lab.run(scenario)
    assert stat.S_IMODE(lab.known_hosts.stat().st_mode) == 0o600
    lines = lab.known_hosts.read_text().splitlines()
    assert len(lines) == 1
    host_pub = lab.sshd.host_key.export_public_key("openssh").decode().split()[:2]
    assert lines[0].split() == [ADDR, *host_pub]


def test_changed_host_key_is_refused_naming_the_node(lab):
    async def first():
        await (await remote.connect(ADDR, **_args(lab))).close()

    lab.run(first)
    pinned = lab.known_hosts.read_text()
    lab.sshd.stop()
    lab.sshd.start(new_host_key=True)

    async def second():
        with pytest.raises(HostKeyChanged) as err:
            await remote.connect(ADDR, name="kbt3-master-1", **_args(lab))
        with pytest.raises(HostKeyChanged):  # not retried as if the node were booting
            await remote.wait_reachable(ADDR, timeout=30, **_args(lab))
        return err.value

    started = time.monotonic()
    err = lab.run(second)
    assert time.monotonic() - started < 10
    assert "kbt3-master-1" in str(err) and ADDR in str(err) and "changed" in str(err)
    assert "PRIVATE" not in str(err) and "AAAA" not in str(err)  # no key material
    assert lab.known_hosts.read_text() == pinned  # the new key was not accepted


def test_sudo_for_a_non_root_user(lab):
    locked = lab.workdir / "root-only"
    locked.mkdir(mode=0o700)

    async def scenario():
        async with await remote.connect(ADDR, **_args(lab, OPS.name)) as node:
            plain = (await node.run("id -u")).stdout.strip()
            elevated = (await node.run("id -u", sudo=True)).stdout.strip()
            await node.put("secret\n", str(locked / "token"), mode=0o600, sudo=True)
            with pytest.raises(RemoteError):
                await node.get(str(locked / "token"))
            data = await node.get(str(locked / "token"), sudo=True)
        async with await remote.connect(ADDR, **_args(lab, NOSUDO.name)) as node:
            with pytest.raises(RemoteError) as err:
                await node.run("systemctl restart haproxy", sudo=True)
        return plain, elevated, data, err.value

    plain, elevated, data, err = lab.run(scenario)
    assert (plain, elevated) == (str(OPS.uid), "0")
    assert data == b"secret\n"
    st = (locked / "token").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert "systemctl restart haproxy" in str(err) and ADDR in str(err) and "password" in str(err)


def test_wait_reachable_gives_up_with_a_clear_message(lab):
    async def scenario():
        started = time.monotonic()
        with pytest.raises(RemoteError) as err:
            await remote.wait_reachable("127.0.0.3", name="kbt3-worker-1", timeout=1.5, **_args(lab))
        return err.value, time.monotonic() - started

    err, took = lab.run(scenario)
    assert 1.0 <= took < 5.0
    msg = str(err)
    assert "kbt3-worker-1" in msg and "127.0.0.3" in msg and "1.5s" in msg and "last error" in msg


def test_wait_reachable_waits_for_a_late_sshd(lab):
    lab.sshd.stop()

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, lambda: loop.run_in_executor(None, lab.sshd.start))
        started = time.monotonic()
        node = await remote.wait_reachable(ADDR, timeout=20, **_args(lab))
        took = time.monotonic() - started
        out = (await node.run("echo up")).stdout.strip()
        await node.close()
        return took, out

    took, out = lab.run(scenario)
    assert out == "up" and took >= 0.9


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (the lab sshd's per-connection processes)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            kids = [int(c) for c in (task / "children").read_text().split()]
            found += kids
            todo += kids
    return found


def test_a_node_that_stops_answering_ends_the_command_instead_of_hanging(lab, monkeypatch):
    """A frozen node (here: its sshd session stopped, the TCP connection open and silent) must end
    a command with a RemoteError naming it, via SSH keepalives, not hang kubitect forever."""
    monkeypatch.setattr(remote, "KEEPALIVE_INTERVAL_S", 0.5)
    monkeypatch.setattr(remote, "KEEPALIVE_COUNT_MAX", 2)
    frozen: list[int] = []

    async def scenario():
        node = await remote.connect(ADDR, name="kbt3-lb-1", **_args(lab))
        try:
            assert (await node.run("echo alive")).stdout.strip() == "alive"  # keepalives answered
            await asyncio.sleep(1.5)
            assert (await node.run("echo still")).stdout.strip() == "still"
            command = asyncio.ensure_future(node.run("sleep 60"))
            await asyncio.sleep(0.5)
            frozen.extend(_descendants(lab.sshd.pid))
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(RemoteError) as err:
                await asyncio.wait_for(command, 30)
            return err.value, time.monotonic() - started
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            await node.close()

    err, took = lab.run(scenario)
    assert frozen, "no sshd session process found to freeze"
    assert took < 10, f"the silent connection was ended after {took:.1f} s"
    assert "kbt3-lb-1" in str(err) and "sleep 60" in str(err)


def test_node_pool_caches_connections_and_bounds_concurrency(lab):
    async def scenario():
        running = peak = 0

        async def work(i: int) -> str:
            nonlocal running, peak
            node = await pool.get(ADDR)
            running += 1
            peak = max(peak, running)
            res = await node.run(f"sleep 0.2; echo {i}")
            running -= 1
            return res.stdout.strip()

        pool = NodePool(user="root", key=lab.key, known_hosts=lab.known_hosts, limit=2)
        async with pool:
            first = await pool.get(ADDR)
            assert await pool.get(ADDR) is first
            out = await pool.each(range(5), work)
        return out, peak, first

    out, peak, first = lab.run(scenario)
    assert out == [str(i) for i in range(5)]
    assert peak == 2
    assert first._conn.is_closed()


def test_exported_ssh_config_works_with_openssh_and_is_strict(lab, tmp_path):
    config = tmp_path / "ssh_config"

    async def pin():
        await (await remote.connect(ADDR, **_args(lab))).close()

    lab.run(pin)
    remote.export_ssh_config(config, [("kbt3-lb-1", ADDR)], "root", lab.key, lab.known_hosts,
                             control_dir=lab.workdir / "cm")
    with entered_netns(lab.netns):
        ok = subprocess.run(["ssh", "-F", str(config), "kbt3-lb-1", "hostname"], capture_output=True,
                            text=True, timeout=20)
        shared = list((lab.workdir / "cm").iterdir())
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "kbt3-lb-1"], capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == os.uname().nodename  # sshd runs on this machine's UTS namespace
    assert len(shared) == 1  # the master connection's socket
    lab.sshd.stop()
    lab.sshd.start(new_host_key=True)
    with entered_netns(lab.netns):
        bad = subprocess.run(["ssh", "-F", str(config), "kbt3-lb-1", "hostname"], capture_output=True,
                             text=True, timeout=20)
    assert bad.returncode != 0 and "host key" in bad.stderr.lower()
