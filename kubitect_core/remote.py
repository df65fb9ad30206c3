"""One small remote-execution layer over asyncssh, used by every plugin that touches a node.

Host keys are pinned per cluster: the first contact records the node's key in the cluster's
known_hosts file; a changed key afterwards is an error (`HostKeyChanged`), never a silent accept.

Errors name the node (its name when the caller gives one, and its address) and the command that
failed; they never contain key material or the input fed to a command (it may be a secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from kubitect_core import runlog

T = TypeVar("T")
R = TypeVar("R")

_CMD_SHOWN = 200  # characters of a command quoted in an error message
_ERR_SHOWN = 800  # characters of stderr quoted in an error message


class RemoteError(Exception):
    """A command failed or a node could not be reached; the message names the node."""


class HostKeyChanged(RemoteError):
    """The node presented a host key different from the one pinned for it."""


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _label(address: str, port: int, name: str | None) -> str:
    where = address if port == 22 else f"{address}:{port}"
    return f"node {name} ({where})" if name and name != address else f"node {where}"


def _short(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- host key pinning


def known_hosts_pattern(address: str, port: int = 22) -> str:
    """The host field OpenSSH uses for `address:port`, so ssh(1) and this module share one file."""
    return address if port == 22 else f"[{address}]:{port}"


def pinned_keys(known_hosts: Path, address: str, port: int = 22) -> list[asyncssh.SSHKey]:
    """The keys pinned for exactly this address and port (no wildcard, no port fallback)."""
    if not known_hosts.is_file():
        return []
    wanted = known_hosts_pattern(address, port)
    keys: list[asyncssh.SSHKey] = []
    for line in known_hosts.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3 or line.lstrip().startswith(("#", "@")):
            continue
        if wanted in parts[0].split(","):
            with contextlib.suppress(asyncssh.KeyImportError):
                keys.append(asyncssh.import_public_key(f"{parts[1]} {parts[2]}"))
    return keys


def pin_key(known_hosts: Path, address: str, port: int, key: asyncssh.SSHKey) -> None:
    """Records a first-contact host key (file 0600, appended under an exclusive lock)."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    line = f"{known_hosts_pattern(address, port)} {key.export_public_key('openssh').decode().strip()}\n"
    fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, 0o600)
        if key.public_data not in {k.public_data for k in pinned_keys(known_hosts, address, port)}:
            os.write(fd, line.encode())
    finally:
        os.close(fd)


def forget_host(known_hosts: Path, address: str, port: int = 22) -> bool:
    """Removes the pinned key of a node that was re-created on purpose; True if one was removed."""
    if not known_hosts.is_file():
        return False
    wanted = known_hosts_pattern(address, port)
    lines = known_hosts.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not (ln.split() and wanted in ln.split()[0].split(","))]
    if len(kept) == len(lines):
        return False
    _write_atomic(known_hosts, "".join(kept), 0o600)
    return True


class _PinningClient(asyncssh.SSHClient):
    """Accepts an unknown host key only when nothing is pinned yet for the address."""

    def __init__(self, has_pin: bool) -> None:
        self.has_pin = has_pin
        self.rejected = False
        self.new_key: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        if self.has_pin:
            self.rejected = True
            return False
        self.new_key = key
        return True


# --------------------------------------------------------------------------- connection


class Remote:
    """A connection to one node. Obtain with `connect()` or `wait_reachable()`."""

    address: str

    def __init__(self, conn: asyncssh.SSHClientConnection, address: str, *, user: str,
                 port: int = 22, name: str | None = None) -> None:
        self._conn = conn
        self.address = address
        self.port = port
        self.user = user
        self.name = name or address

    def __repr__(self) -> str:
        return f"<Remote {self.user}@{_label(self.address, self.port, self.name)}>"

    @property
    def label(self) -> str:
        """How errors and progress name this node: 'node NAME (ADDRESS)'."""
        return _label(self.address, self.port, self.name)

    def _wrap(self, command: str, sudo: bool) -> str:
        if sudo and self.user != "root":
            return "sudo -n -- sh -c " + shlex.quote(command)
        return command

    async def _exec(self, command: str, *, what: str, input: Any, timeout: float | None,
                    binary: bool) -> asyncssh.SSHCompletedProcess:
        # The run log (kubitect_core.runlog) keeps what the error messages below can only quote.
        with runlog.remote_command(self.label, what, sudo=command.startswith("sudo -n"), stdin=input) as logged:
            try:
                proc = await self._conn.run(command, check=False, timeout=timeout, input=input,
                                            encoding=None if binary else "utf-8", errors="replace")
            except asyncssh.TimeoutError as exc:
                shown = _short(what, _CMD_SHOWN)
                raise RemoteError(f"{self.label}: `{shown}` timed out after {timeout}s") from exc
            except (asyncssh.Error, OSError) as exc:
                raise RemoteError(f"{self.label}: `{_short(what, _CMD_SHOWN)}` failed: {exc}") from exc
            logged.finished(proc.exit_status, proc.stdout, proc.stderr, binary=binary)
            return proc

    def _failed(self, what: str, status: int | None, stderr: str) -> RemoteError:
        detail = _short(stderr, _ERR_SHOWN)
        return RemoteError(f"{self.label}: `{_short(what, _CMD_SHOWN)}` exited with {status}"
                           + (f": {detail}" if detail else ""))

    async def run(self, command: str, *, check: bool = True, sudo: bool = False,
                  timeout: float | None = None, input: str | None = None) -> Result:
        """Runs a shell command; with check=True a non-zero exit raises RemoteError.

        sudo=True goes through `sudo -n` (never prompts, so a missing sudo rule fails fast
        instead of hanging) unless the connection is already root.
        """
        proc = await self._exec(self._wrap(command, sudo), what=command, input=input,
                                timeout=timeout, binary=False)
        status = proc.exit_status if proc.exit_status is not None else 255
        result = Result(status, str(proc.stdout or ""), str(proc.stderr or ""))
        if check and not result.ok:
            raise self._failed(command, status, result.stderr)
        return result

    async def put(self, data: bytes | str, path: str, *, mode: int = 0o644, sudo: bool = False) -> None:
        """Writes `data` to `path` atomically (temp file + rename), with `mode`.

        A reader on the node never sees a half-written file (a config a daemon reloads, a
        key); the parent directory is created when missing.
        """
        payload = data.encode() if isinstance(data, str) else data
        quoted = shlex.quote(path)
        parent = shlex.quote(os.path.dirname(path) or ".")
        base = shlex.quote("." + os.path.basename(path) + ".kubitect.XXXXXX")
        script = (
            f"umask 077; mkdir -p {parent} && t=$(mktemp -p {parent} {base}) && "
            f'{{ cat > "$t" && chmod {mode:o} "$t" && mv -f "$t" {quoted}; }} || {{ rm -f "$t"; exit 1; }}'
        )
        what = f"put {path}"
        proc = await self._exec(self._wrap(script, sudo), what=what, input=payload, timeout=None, binary=True)
        if proc.exit_status != 0:
            raise self._failed(what, proc.exit_status, bytes(proc.stderr or b"").decode(errors="replace"))

    async def get(self, path: str, *, sudo: bool = False) -> bytes:
        """Reads a file from the node (binary-safe)."""
        what = f"get {path}"
        proc = await self._exec(self._wrap(f"cat -- {shlex.quote(path)}", sudo), what=what, input=None,
                                timeout=None, binary=True)
        if proc.exit_status != 0:
            raise self._failed(what, proc.exit_status, bytes(proc.stderr or b"").decode(errors="replace"))
        return bytes(proc.stdout or b"")

    async def close(self) -> None:
        """Closes the connection; safe to call twice."""
        self._conn.close()
        with contextlib.suppress(Exception):
            await self._conn.wait_closed()

    async def __aenter__(self) -> Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(address: str, *, user: str, key: Path, known_hosts: Path, port: int = 22,
                  timeout: float = 10.0, name: str | None = None) -> Remote:
    """Opens one connection, pinning the host key in `known_hosts` on first contact.

    `name` (the node name) only improves messages. A key different from the pinned one raises
    HostKeyChanged; any other failure raises RemoteError naming the node.
    """
    known_hosts = Path(known_hosts)
    label = _label(address, port, name)
    pins = pinned_keys(known_hosts, address, port)
    client = _PinningClient(has_pin=bool(pins))
    try:
        client_key = asyncssh.read_private_key(str(key))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise RemoteError(f"{label}: cannot read the SSH private key {key}: {type(exc).__name__}") from None
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: client, address, port=port, username=user, client_keys=[client_key],
                known_hosts=(pins, [], []), agent_path=None, config=[], password=None,
                kbdint_auth=False, gss_host=None, preferred_auth="publickey",
                connect_timeout=timeout,
            ),
            timeout + 1,
        )
    except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
        if pins:
            raise HostKeyChanged(
                f"{label}: the SSH host key changed since it was pinned in {known_hosts}. If the "
                f"node was re-created on purpose, remove its entry "
                f"(ssh-keygen -R '{known_hosts_pattern(address, port)}' -f {known_hosts}); otherwise "
                f"something else answers at this address."
            ) from None
        raise RemoteError(f"{label}: SSH key exchange failed: {exc}") from None
    except asyncssh.PermissionDenied:
        raise RemoteError(f"{label}: SSH login as '{user}' with key {key} was refused") from None
    except (TimeoutError, asyncssh.Error, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise RemoteError(f"{label}: cannot connect over SSH: {reason}") from None
    if client.new_key is not None:
        pin_key(known_hosts, address, port, client.new_key)
    return Remote(conn, address, user=user, port=port, name=name)


async def wait_reachable(address: str, *, user: str, key: Path, known_hosts: Path, port: int = 22,
                         timeout: float = 300.0, name: str | None = None,
                         interval: float = 0.5) -> Remote:
    """Retries `connect` until it succeeds or `timeout` passes (then RemoteError).

    A booting node refuses, resets or rejects the key for a while; all of that is retried. A
    changed host key is not: it raises HostKeyChanged at once.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        left = deadline - time.monotonic()
        try:
            return await connect(address, user=user, key=key, known_hosts=known_hosts, port=port,
                                 timeout=max(1.0, min(10.0, left)), name=name)
        except HostKeyChanged:
            raise
        except RemoteError as exc:
            last = str(exc).split(": ", 1)[-1]
        if time.monotonic() + interval >= deadline:
            raise RemoteError(
                f"{_label(address, port, name)} not reachable over SSH as '{user}' within "
                f"{timeout:g}s; last error: {last}"
            )
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- many nodes


class NodePool:
    """Per-run cache of connections keyed by address, plus a bound on concurrent per-node work.

    Plugins share one pool per run so each node gets one SSH connection, and `each()` runs one
    coroutine per node with at most `limit` at a time (a 2-core machine must not boot or
    configure 20 nodes at once).
    """

    def __init__(self, *, user: str, key: Path, known_hosts: Path, port: int = 22, limit: int = 8,
                 connect_timeout: float = 10.0) -> None:
        self.user, self.key, self.known_hosts, self.port = user, Path(key), Path(known_hosts), port
        self.connect_timeout = connect_timeout
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self._conns: dict[str, Remote] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_access(cls, ssh: Any, *, limit: int = 8, port: int = 22) -> NodePool:
        """A pool from the cluster's `contracts.SshAccess` (user, private key, known_hosts)."""
        return cls(user=ssh.user, key=ssh.private_key, known_hosts=ssh.known_hosts, limit=limit, port=port)

    async def get(self, address: str, *, name: str | None = None, wait: float | None = None) -> Remote:
        """The cached connection to `address`, opened on first use (waiting up to `wait` s)."""
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            remote = self._conns.get(address)
            if remote is not None and not remote._conn.is_closed():
                return remote
            args = dict(user=self.user, key=self.key, known_hosts=self.known_hosts, port=self.port, name=name)
            if wait:
                remote = await wait_reachable(address, timeout=wait, **args)
            else:
                remote = await connect(address, timeout=self.connect_timeout, **args)
            self._conns[address] = remote
            return remote

    async def each(self, items: Iterable[T], fn: Callable[[T], Awaitable[R]], *,
                   return_exceptions: bool = False) -> list[R]:
        """Runs `fn(item)` for every item, at most `limit` at a time; results in input order.

        With return_exceptions=False the first failure is raised after the others finished,
        so no half-started coroutine is left running behind the caller's back.
        """
        async def bounded(item: T) -> R:
            async with self._sem:
                return await fn(item)

        results = await asyncio.gather(*(bounded(i) for i in items), return_exceptions=True)
        if not return_exceptions:
            for res in results:
                if isinstance(res, BaseException):
                    raise res
        return list(results)  # type: ignore[arg-type]

    async def close_all(self) -> None:
        """Closes every cached connection (end of a run, also after a failure)."""
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    async def __aenter__(self) -> NodePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_all()


# --------------------------------------------------------------------------- OpenSSH client config


def _q(value: str | Path) -> str:
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def export_ssh_config(path: Path, nodes: Sequence[tuple[str, str]], user: str, key: Path,
                      known_hosts: Path, *, port: int = 22, proxy_command: str | None = None,
                      control_dir: Path | None = None) -> Path:
    """Writes an OpenSSH client config for the nodes, so ssh(1) and testinfra share our pinning.

    Each node is reachable by name and by IP; host keys are checked strictly against the
    cluster's pinned known_hosts (never ~/.ssh/known_hosts), with the cluster key only.
    `control_dir` turns on connection sharing (testinfra runs one ssh per check: ~130 ms each
    with a master connection instead of a full handshake every time).
    """
    blocks = []
    for name, ip in nodes:
        lines = [
            f"Host {name} {ip}" if name != ip else f"Host {ip}",
            f"  HostName {ip}",
            f"  User {user}",
            f"  Port {port}",
            f"  IdentityFile {_q(key)}",
            "  IdentitiesOnly yes",
            "  IdentityAgent none",
            "  StrictHostKeyChecking yes",
            f"  UserKnownHostsFile {_q(known_hosts)}",
            "  GlobalKnownHostsFile /dev/null",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            "  BatchMode yes",
            "  ConnectTimeout 10",
            "  LogLevel ERROR",
        ]
        if proxy_command:
            lines.append(f"  ProxyCommand {proxy_command}")
        if control_dir:
            lines += ["  ControlMaster auto", f"  ControlPath {_q(Path(control_dir) / '%r@%h:%p')}",
                      "  ControlPersist 60s"]
        blocks.append("\n".join(lines))
    if control_dir:
        longest = max((len(f"{user}@{ip}:{port}") for _n, ip in nodes), default=0)
        if len(str(control_dir)) + longest + 20 > 104:  # ssh adds a random suffix; sun_path is 108
            raise ValueError(f"control_dir {control_dir} is too long for SSH's control sockets; "
                             "choose a shorter directory (e.g. under /tmp or /run)")
        Path(control_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    text = "# Written by kubitect: the cluster's nodes with their pinned host keys.\n\n"
    text += "\n\n".join(blocks) + "\n"
    _write_atomic(Path(path), text, 0o600)
    return Path(path)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
