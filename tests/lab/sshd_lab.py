"""Helpers for lab tests: private network namespaces, a real sshd inside one, and a way in.

How the test process reaches a namespace (the choice, and why):
    The test thread *enters* the lab namespace for the networked part of a test
    (`entered_netns(name)`, a `setns(2)` of the calling thread only, undone in a `finally`).
    That is exactly what `ip netns exec` does for a child process, minus the child: asyncssh's
    sockets, and every `ip`/`systemd-nspawn` process the code under test starts, are created
    inside the lab namespace, so nothing is ever added to the root namespace and no veth crosses
    into it. Loopback inside a namespace is private to it, so an sshd bound to 127.0.0.x there is
    reachable only by a thread that entered it.

Safety rules kept here: unique names from a caller-given prefix plus a random suffix; every
process started by a helper is marked with `LAB_MARK_ENV=<mark>` in its environment and stopped
by PID; `lab_netns()` kills what a namespace holds, deletes it, and sweeps marked processes in a
`finally`, also after a failing test.

A non-root SSH user (with or without a sudo rule) exists only for the sshd that needs it: sshd
runs in a private mount namespace where copies of /etc/passwd, /etc/group, /etc/shadow and
/etc/sudoers.d carrying the extra users are bind-mounted. The machine's own files are untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

LAB_MARK_ENV = "KUBITECT_LAB_MARK"
CLONE_NEWNET = 0x40000000
SSHD = "/usr/sbin/sshd"

_libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- preconditions


def require_lab(*binaries: str) -> None:
    """Skips the calling test (with the reason) unless root and the named binaries exist."""
    if os.geteuid() != 0:
        pytest.skip("lab test: needs root (network namespaces, sshd, systemd-nspawn)")
    for name in ("ip", *binaries):
        if shutil.which(name) is None and not Path(name).exists():
            pytest.skip(f"lab test: '{name}' is not installed")


# Module marks for tests of the lab harness itself (kubitect_core.lab): root and iproute2, or skip.
HARNESS_MARKS = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root (network namespaces)"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="lab tests need iproute2 (`ip`)"),
]


@contextlib.contextmanager
def harness_prefix(tag: str = "kbt2") -> Iterator[str]:
    """A kubitect_core.lab prefix no other test run uses; every lab with it is removed afterwards.

    Why the sweep: a failing test may leave labs (namespaces, marked processes) behind.
    """
    from kubitect_core.lab import lab_down_all

    prefix = unique_name(f"{tag}-") + "-"
    try:
        yield prefix
    finally:
        lab_down_all(prefix=prefix, grace=1.0)


def run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Runs a command, raising with its stderr when it fails (check=True)."""
    proc = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def unique_name(prefix: str) -> str:
    """`prefix` plus 6 random hex digits: a name no other test run uses."""
    return f"{prefix}{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- namespaces


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def current_netns_inode() -> int:
    """The network namespace of the calling thread (to compare with PID 1's)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def root_netns_inode() -> int:
    """The machine's initial network namespace (PID 1's, else kthreadd's when PID 1 is hidden)."""
    for pid in (1, 2):
        with contextlib.suppress(OSError):
            return os.stat(f"/proc/{pid}/ns/net").st_ino
    raise OSError("cannot see the initial network namespace")


@contextlib.contextmanager
def entered_netns(name: str) -> Iterator[None]:
    """Moves the calling thread into network namespace `name` and back afterwards.

    Use around `asyncio.run(...)`: sockets and child processes made by this thread in the block
    belong to the lab namespace.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)


def netns_pids(name: str) -> list[int]:
    proc = run("ip", "netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def kill_pid(pid: int, *, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaps it when it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def marked_pids(mark: str, env: str = LAB_MARK_ENV) -> list[int]:
    """PIDs of other processes whose environment carries `env=mark` (default `LAB_MARK_ENV`).

    Why: a process left in a deleted namespace is found only by the marker it was started with.
    """
    needle = f"{env}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(mark: str) -> list[int]:
    """Stops every process still carrying `mark` (ip netns del does not kill them)."""
    pids = marked_pids(mark)
    for pid in pids:
        kill_pid(pid, grace=2.0)
    return pids


def delete_netns(name: str) -> None:
    """Kills what the namespace holds (by PID) and deletes it; no error when already gone."""
    if not Path(f"/run/netns/{name}").exists():
        return
    for pid in netns_pids(name):
        kill_pid(pid, grace=2.0)
    run("ip", "netns", "del", name, check=False)


@contextlib.contextmanager
def lab_netns(prefix: str, *, mark: str | None = None) -> Iterator[str]:
    """A fresh namespace `<prefix><random>` with loopback up; always torn down afterwards."""
    name = unique_name(prefix)
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        delete_netns(name)
        sweep(mark or name)


# --------------------------------------------------------------------------- keys


def write_keypair(path: Path, comment: str = "kubitect-lab") -> asyncssh.SSHKey:
    """An ed25519 key pair at `path` (0600) and `path.pub`, generated in-process."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key("openssh"))
    Path(f"{path}.pub").write_bytes(key.export_public_key("openssh"))
    return key


# --------------------------------------------------------------------------- sshd


@dataclass
class LabUser:
    """A login that exists only inside one lab sshd's mount namespace."""

    name: str
    uid: int
    sudo: bool = False


@dataclass
class Sshd:
    """A real sshd in a namespace: own host key, own config, public-key logins only."""

    netns: str
    workdir: Path
    listen: str
    port: int
    authorized_key: str
    users: Sequence[LabUser] = ()
    mark: str = ""
    proc: subprocess.Popen | None = None
    host_key: asyncssh.SSHKey | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        path = self.workdir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, *, new_host_key: bool = False, timeout: float = 5.0) -> Sshd:
        """Starts sshd (a new host key when asked, else the existing one) and waits until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # non-root users read their authorized_keys as themselves
        key_path = self.workdir / "ssh_host_ed25519_key"
        if new_host_key or not key_path.exists():
            self.host_key = write_keypair(key_path, comment="lab-host")
        else:
            self.host_key = asyncssh.read_private_key(str(key_path))
        keys_dir = self.workdir / "authorized_keys"
        keys_dir.mkdir(exist_ok=True)
        os.chmod(keys_dir, 0o755)
        for user in ["root", *(u.name for u in self.users)]:
            (keys_dir / user).write_text(self.authorized_key.strip() + "\n")
            os.chmod(keys_dir / user, 0o644)
        config = self.workdir / "sshd_config"
        config.write_text(
            f"ListenAddress {self.listen}:{self.port}\n"
            f"HostKey {key_path}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {keys_dir}/%u\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nLogLevel VERBOSE\n"
            f"AllowUsers root {' '.join(u.name for u in self.users)}\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's compiled-in privsep dir
        argv = ["ip", "netns", "exec", self.netns]
        if self.users:
            argv += ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     self._etc_overlay_script() + f' && exec {SSHD} -D -e -f "$0"', str(config)]
        else:
            argv += [SSHD, "-D", "-e", "-f", str(config)]
        env = {**os.environ, LAB_MARK_ENV: self.mark or self.netns}
        log = open(self.workdir / "sshd.log", "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while "Server listening" not in self.log:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lab sshd in {self.netns} did not start:\n{self.log[-2000:]}")
            time.sleep(0.05)
        return self

    def _etc_overlay_script(self) -> str:
        etc = self.workdir / "etc"
        sudoers = etc / "sudoers.d"
        sudoers.mkdir(parents=True, exist_ok=True)
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        shadow = Path("/etc/shadow").read_text()
        for u in self.users:
            home = self.workdir / "home" / u.name
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, u.uid, u.uid)
            passwd += f"{u.name}:x:{u.uid}:{u.uid}::{home}:/bin/sh\n"
            group += f"{u.name}:x:{u.uid}:\n"
            shadow += f"{u.name}:*:19000:0:99999:7:::\n"
        (etc / "passwd").write_text(passwd)
        (etc / "group").write_text(group)
        (etc / "shadow").write_text(shadow)
        os.chmod(etc / "shadow", 0o640)
        rules = "".join(f"{u.name} ALL=(ALL) NOPASSWD: ALL\n" for u in self.users if u.sudo)
        (sudoers / "kubitect-lab").write_text(rules)
        os.chmod(sudoers / "kubitect-lab", 0o440)
        binds = [(etc / "passwd", "/etc/passwd"), (etc / "group", "/etc/group"),
                 (etc / "shadow", "/etc/shadow"), (sudoers, "/etc/sudoers.d")]
        return " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in binds)

    def stop(self) -> None:
        """Stops this sshd by its PID (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            kill_pid(self.proc.pid)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=2)


def lab_workdir(prefix: str) -> Path:
    """A world-traversable scratch dir (pytest's tmp_path is 0700, which sshd users cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path
