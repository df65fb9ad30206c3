"""The run log: what remote.py ran on a node, written by the log the engine installs.

The node is a real SSH server (asyncssh, on loopback) that runs each command with /bin/sh, so
the log sees real exit codes, real stdout/stderr and real timings through the real client.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import tarfile
import time
from pathlib import Path

import asyncssh
import pytest

from kubitect_core import remote, runlog
from kubitect_core.remote import RemoteError

TOKEN = "9a08jv.c0izixklcxtmnze7"


class _Node(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True


def _shell(started: list[asyncio.subprocess.Process]):
    """The node's command handler: runs each command with /bin/sh, with the client's stdin streamed
    to it (like sshd: a command that reads nothing never waits for an end of input the client may
    not send). Every process it starts goes into `started`, for the scenario to clean up."""
    async def run(process: asyncssh.SSHServerProcess) -> None:
        proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", process.command, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        started.append(proc)

        async def feed() -> None:
            try:
                while data := await process.stdin.read(65536):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            except (asyncssh.Error, OSError):
                pass
            finally:
                proc.stdin.close()

        feeder = asyncio.create_task(feed())
        try:
            out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            code = await proc.wait()
        finally:
            feeder.cancel()
        process.stdout.write(out)
        process.stderr.write(err)
        process.exit(code)
    return run


@pytest.fixture
def node(tmp_path):
    """(host key, client key path, known_hosts path) for a loopback SSH node started per scenario."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_ed25519"
    key.write_private_key(str(key_path))
    return {"host_key": asyncssh.generate_private_key("ssh-ed25519"), "key": key_path,
            "known_hosts": tmp_path / "known_hosts"}


def _scenario(node, body):
    """Starts the node, connects as user 'k8s' (so sudo=True wraps with `sudo -n`), runs body(remote)."""
    async def main():
        started: list[asyncio.subprocess.Process] = []
        server = await asyncssh.create_server(_Node, "127.0.0.1", 0, server_host_keys=[node["host_key"]],
                                              process_factory=_shell(started), encoding=None)
        port = server.sockets[0].getsockname()[1]
        handlers = asyncio.all_tasks()
        try:
            r = await remote.connect("127.0.0.1", port=port, user="k8s", key=node["key"],
                                     known_hosts=node["known_hosts"], name="k8s-master-1")
            async with r:
                return await body(r)
        finally:
            server.close()
            await server.wait_closed()
            for task in asyncio.all_tasks() - handlers - {asyncio.current_task()}:  # the node's command handlers
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            for proc in started:  # e.g. the command a client's timeout abandoned
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                # asyncio's Process has no public close: an unclosed transport warns when it is
                # collected after its loop is gone, in whichever test that happens
                proc._transport.close()
            await asyncio.sleep(0.05)  # the transports' close callbacks run inside this loop
    return asyncio.run(main())


def _log(tmp_path, live=None) -> runlog.RunLog:
    return runlog.open_log(tmp_path / "cluster" / "logs", "apply", cluster="c1", live=live)


def test_every_command_is_logged_with_node_status_output_and_time(node, tmp_path):
    log = _log(tmp_path)
    long_output = "".join(f"line {i} of the apt output\n" for i in range(400))  # far beyond 800 characters

    async def body(r):
        with runlog.installed(log):
            await r.run(f"printf '%s' '{long_output}'")
            await r.run("echo to-stderr >&2; sleep 0.2; exit 3", check=False)
            with pytest.raises(RemoteError) as err:
                await r.run("echo the cause is here; echo and here >&2; exit 7")
            return err.value

    error = _scenario(node, body)
    log.close()
    text = log.path.read_text()
    assert "node k8s-master-1 (127.0.0.1:" in text
    assert "$ printf" in text and "line 399 of the apt output" in text and "line 0 of the apt output" in text
    assert "= exit 3 after" in text and "stderr | to-stderr" in text
    exit3 = next(line for line in text.splitlines() if "= exit 3 after" in line)
    assert float(exit3.split("after ")[1].split(" s")[0]) >= 0.2
    assert "= exit 7 after" in text and "stdout | the cause is here" in text and "stderr | and here" in text
    assert "exited with 7" in str(error), "the error the caller sees is unchanged"


def test_secrets_stdin_and_fetched_files_are_never_written(node, tmp_path):
    log = _log(tmp_path)

    async def body(r):
        with runlog.installed(log):
            await r.run(f"echo 'kubeadm join 10.0.0.5:6443 --token {TOKEN}'")
            await r.run("cat > /dev/null", input="the-stdin-secret-value\n")
            await r.put("private: the-put-secret\n", str(tmp_path / "put.txt"))
            assert await r.get(str(tmp_path / "put.txt")) == b"private: the-put-secret\n"

    _scenario(node, body)
    log.close()
    text = log.path.read_text()
    assert TOKEN not in text and "--token <redacted>" in text
    assert "the-stdin-secret-value" not in text and "stdin 23 bytes not logged" in text
    assert "the-put-secret" not in text
    assert f"$ put {tmp_path / 'put.txt'}" in text and f"$ get {tmp_path / 'put.txt'}" in text
    assert "(24 bytes fetched, not logged)" in text


def test_sudo_is_noted_and_the_command_shown_unwrapped(node, tmp_path):
    log = _log(tmp_path)

    async def body(r):
        with runlog.installed(log):
            await r.run("true", sudo=True, check=False)

    _scenario(node, body)
    log.close()
    line = next(x for x in log.path.read_text().splitlines() if "$ true" in x)
    assert "(sudo)" in line and "sh -c" not in line


def test_a_timeout_is_logged_as_such(node, tmp_path):
    log = _log(tmp_path)

    async def body(r):
        with runlog.installed(log), pytest.raises(RemoteError):
            await r.run("sleep 2", timeout=0.3)

    _scenario(node, body)
    log.close()
    assert any("! sleep 2:" in x and "timed out" in x for x in log.path.read_text().splitlines())


def test_without_an_installed_log_nothing_is_written(node, tmp_path):
    async def body(r):
        return (await r.run("echo hi")).stdout

    assert _scenario(node, body) == "hi\n"
    assert runlog.current() is None
    assert not (tmp_path / "cluster").exists()


def test_live_callback_sees_each_record_as_written(node, tmp_path):
    seen: list[str] = []
    log = _log(tmp_path, live=seen.append)

    async def body(r):
        with runlog.installed(log):
            await r.run(f"echo token: {TOKEN}")

    _scenario(node, body)
    log.close()
    joined = "\n".join(seen)
    assert "$ echo token: <redacted>" in joined and "stdout | token: <redacted>" in joined
    assert TOKEN not in joined


def test_log_files_are_private_and_named_by_time_and_command(tmp_path):
    log = _log(tmp_path)
    log.note("hello")
    log.close()
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    assert log.path.name.endswith("Z-apply.log") and log.path.name[:8].isdigit()
    second = _log(tmp_path)  # same millisecond or not: never the same file
    assert second.path != log.path


def test_old_logs_are_pruned_by_count_and_size(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(30):
        (logs / f"2025010{i // 10}T0000{i % 10:02d}.000Z-apply.log").write_text("x" * 1000)
    runlog.prune(logs, keep=20, keep_bytes=1 << 30)
    left = runlog.log_files(logs)
    assert len(left) == 20 and left[0].name.startswith("20250101T000000")
    runlog.prune(logs, keep=20, keep_bytes=5500)
    assert [p.name for p in runlog.log_files(logs)] == [p.name for p in left[-5:]]
    (logs / "notes.txt").write_text("not a log")
    runlog.prune(logs, keep=1, keep_bytes=0)
    assert len(runlog.log_files(logs)) == 1 and (logs / "notes.txt").exists(), "the newest log always stays"


def test_a_log_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "MAX_LOG_BYTES", 4000)
    monkeypatch.setattr(runlog, "STREAM_HEAD", 100)
    monkeypatch.setattr(runlog, "STREAM_TAIL", 100)
    log = _log(tmp_path)
    with runlog.installed(log):
        with runlog.remote_command("node n1", "yes | head -1000") as cmd:
            cmd.finished(0, "y\n" * 1000, "")
        for i in range(100):
            with runlog.remote_command("node n1", f"step {i}") as cmd:
                cmd.finished(0, "output " * 50, "")
    log.close()
    text = log.path.read_text()
    assert "characters omitted" in text
    assert "log size limit of 4000 bytes reached" in text
    assert "step 29" in text and "output output" not in text.split("size limit")[1], \
        "after the limit, what ran and how it ended is still written, its output no more"
    assert log.path.stat().st_size <= 2 * 4000


def test_an_unwritable_log_warns_once_and_never_fails_the_run(tmp_path):
    warnings: list[str] = []
    log = runlog.open_log(tmp_path / "logs", "apply", cluster="c1", warn=warnings.append)
    import os

    os.close(log._fd)  # the disk is gone, the descriptor broken
    log.note("first")
    log.note("second")
    assert len(warnings) == 1 and "cannot be written" in warnings[0]


def test_bundle_holds_logs_and_events(tmp_path):
    cluster = tmp_path / "c1"
    log = runlog.open_log(cluster / "logs", "apply", cluster="c1")
    log.note("done")
    log.close()
    (cluster / "events.jsonl").write_text('{"v": 1}\n')
    out = tmp_path / "b.tar.gz"
    names = runlog.bundle(cluster, str(out), prefix="c1-logs")
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        assert sorted(m.name for m in members) == sorted(names)
        assert {m.name.split("/", 1)[1] for m in members} == {f"logs/{log.path.name}", "events.jsonl"}
        assert all(m.mode == 0o600 and m.uid == 0 for m in members)


def test_interrupted_command_is_logged(tmp_path):
    log = _log(tmp_path)
    with runlog.installed(log), pytest.raises(KeyboardInterrupt):
        with runlog.remote_command("node n1", "kubeadm init"):
            time.sleep(0.01)
            raise KeyboardInterrupt
    log.close()
    assert "node n1 ! kubeadm init: interrupted" in log.path.read_text()


def test_stage_events_go_into_the_log(tmp_path):
    from kubitect_core.contracts import Change

    log = _log(tmp_path)
    log.kubitect_stage_started(cluster="c1", stage="kubernetes", action="apply")
    log.kubitect_stage_progress(cluster="c1", stage="kubernetes", subject="m1", message="kubeadm init")
    log.kubitect_stage_finished(cluster="c1", stage="kubernetes", action="apply", ok=False, seconds=2.0, changes=[],
                                error=f"node m1: exited 1: bad token {TOKEN}")
    log.kubitect_stage_finished(cluster="c1", stage="vms", action="apply", ok=True, seconds=1.0,
                                changes=[Change("create", "domain", "c1-m1", "host1"), Change("keep", "pool", "p")],
                                error=None)
    log.close()
    text = log.path.read_text()
    assert "[kubernetes] stage kubernetes apply started" in text and "[kubernetes] m1: kubeadm init" in text
    assert "stage kubernetes apply FAILED after 2.0 s" in text and "bad token <redacted>" in text
    assert "create domain c1-m1 on host1" in text and "keep pool p" not in text
    assert Path(log.path).read_text().startswith("# kubitect run log: cluster=c1 command=apply")
