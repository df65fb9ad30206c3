"""One small remote-execution layer over asyncssh, used by every plugin that touches a node.

Host keys are pinned per cluster: the first contact records the node's key in the cluster's
known_hosts file; a changed key afterwards is an error (`HostKeyChanged`), never a silent accept.

Errors name the node (its name when the caller gives one, and its address) and the command that
failed; they never contain key material or the input fed to a command (it may be a secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubitect_core import known_hosts as kh
from kubitect_core import runlog
from kubitect_core.sdk.lazy import lazy_import

asyncssh = lazy_import("asyncssh")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

T = TypeVar("T")
R = TypeVar("R")

_CMD_SHOWN = 200  # characters of a command quoted in an error message
_ERR_SHOWN = 800  # characters of stderr quoted in an error message
# A node that stops answering (a frozen or emulated VM descheduled for good, a cut link) leaves
# its TCP connection open and silent: without keepalives a command or file copy on it would wait
# forever, and `kubitect run` with it. An SSH keepalive every 15 s, 4 unanswered, ends such a
# connection within about a minute with a RemoteError naming the node; a busy node answers them
# (sshd replies from its own process, not the command's).
KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COUNT_MAX = 4


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


def _label(address: str, port: int | None, name: str | None, kind: str = "node") -> str:
    where = address if port in (22, None) else f"{address}:{port}"
    return f"{kind} {name} ({where})" if name and name != address else f"{kind} {where}"


def _short(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- host key pinning


def known_hosts_pattern(address: str, port: int = 22) -> str:
    """The host field OpenSSH uses for `address:port`, so ssh(1) and this module share one file."""
    return kh.host_pattern(address, port)


def pinned_keys(known_hosts: Path, address: str, port: int = 22, *, name: str | None = None) -> list[asyncssh.SSHKey]:
    """The keys pinned for exactly this address and port, or the explicit pin `name`."""
    return kh.keys_for(Path(known_hosts), name or known_hosts_pattern(address, port))


def pin_key(known_hosts: Path, address: str, port: int, key: asyncssh.SSHKey, *, name: str | None = None,
            replace: bool = False) -> None:
    """Records a host key (file 0600, under a lock, never twice).

    replace=True drops other keys pinned for the same name: for a key kubitect generated itself.
    """
    kh.pin(Path(known_hosts), name or known_hosts_pattern(address, port), key, replace=replace)


def forget_host(known_hosts: Path, address: str, port: int = 22, *, name: str | None = None) -> bool:
    """Removes the pinned keys of a machine that is gone or re-created on purpose; True if any."""
    return kh.forget(Path(known_hosts), name or known_hosts_pattern(address, port))


def forget_hosts(known_hosts: Path, addresses: Iterable[str], port: int = 22) -> int:
    """`forget_host` for many machines in one rewrite of the file; how many keys went."""
    return kh.forget_many(Path(known_hosts), [known_hosts_pattern(a, port) for a in addresses])


class HostKeyUnknown(RemoteError):
    """First contact with `verify` on, and the key is not in the user's known_hosts."""


class _Pinning:
    """The SSH client's host-key policy (mixed into asyncssh.SSHClient by `_pinning_client`).

    Decides about a key that is not pinned: accept it on first contact, never once pinned.

    With `known_first` set, a first-contact key is accepted only when the user's own known_hosts
    (asyncssh-matched for the host, address and port the connection resolved) already trusts it.
    """

    def __init__(self, has_pin: bool, known_first: Sequence[Path] | None = None) -> None:
        self.has_pin = has_pin
        self.known_first = known_first
        self.offered: asyncssh.SSHKey | None = None
        self.new_key: asyncssh.SSHKey | None = None
        self.unknown = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        if self.has_pin:
            return False
        if self.known_first is not None:
            trusted = _user_trusted(self.known_first, host, addr, port)
            if key.public_data not in {k.public_data for k in trusted}:
                self.unknown = True
                return False
        self.new_key = key
        return True


@functools.cache
def _pinning_client() -> type:
    """The client class, made when the first connection is opened (asyncssh loads only then)."""
    return type("_PinningClient", (_Pinning, asyncssh.SSHClient), {})


def _user_trusted(files: Sequence[Path], host: str, addr: str, port: int) -> list[asyncssh.SSHKey]:
    if not files:
        return []
    try:
        known = asyncssh.read_known_hosts([str(f) for f in files])
        return list(asyncssh.match_known_hosts(known, host, addr, port)[0])
    except (OSError, ValueError):
        return []


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


async def connect(address: str, *, user: str, key: Path | None, known_hosts: Path, port: int | None = 22,
                  timeout: float = 10.0, name: str | None = None, kind: str = "node",
                  pin_as: str | None = None, ssh_config: Sequence[Path] | None = None,
                  verify_with: Sequence[Path] | None = None, use_agent: bool = False) -> Remote:
    """Opens one connection, pinning the host key in `known_hosts` on first contact.

    `name` (the node or host name) and `kind` only improve messages. A key different from the
    pinned one raises HostKeyChanged; any other failure raises RemoteError naming the machine.

    For a libvirt host, reached as ssh(1) would reach it: `ssh_config` files are honoured
    (ProxyJump, Port when `port` is None, IdentityFile when `key` is None, HostName), the pin is
    recorded under `pin_as`, `use_agent` allows the ssh-agent, and `verify_with` (the user's
    known_hosts files, for `ssh.verify: true`) must already trust a first-contact key, else
    HostKeyUnknown.
    """
    known_hosts = Path(known_hosts)
    label = _label(address, port, name, kind)
    pattern = pin_as or known_hosts_pattern(address, port or 22)
    pins = kh.keys_for(known_hosts, pattern)
    client = _pinning_client()(has_pin=bool(pins), known_first=verify_with)
    client_keys: Any = ()
    if key is not None:
        try:
            client_keys = [asyncssh.read_private_key(str(key))]
        except (OSError, asyncssh.KeyImportError) as exc:
            raise RemoteError(f"{label}: cannot read the SSH private key {key}: {type(exc).__name__}") from None
    options: dict[str, Any] = dict(
        username=user, client_keys=client_keys, known_hosts=(pins, [], []), password=None,
        kbdint_auth=False, gss_host=None, preferred_auth="publickey", connect_timeout=timeout,
        keepalive_interval=KEEPALIVE_INTERVAL_S, keepalive_count_max=KEEPALIVE_COUNT_MAX,
        config=[str(p) for p in ssh_config] if ssh_config is not None else [],
    )
    if not use_agent:
        options["agent_path"] = None
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(lambda: client, address, port=port if port is not None else (), **options),
            timeout + 1,
        )
    except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
        # No key offered to us and not a key-type mismatch: a ProxyJump host on the way failed.
        ours = client.offered is not None or isinstance(exc, asyncssh.KeyExchangeFailed)
        if pins and ours:
            offered = kh.fingerprint(client.offered) if client.offered else "a key of another type"
            raise HostKeyChanged(
                f"{label}: the SSH host key changed since it was pinned in {known_hosts}: pinned "
                f"{', '.join(kh.fingerprint(k) for k in pins)}, offered {offered}. If the {kind} was "
                f"re-installed or re-created on purpose, remove its entry "
                f"(ssh-keygen -R '{pattern}' -f {known_hosts}); otherwise something else answers "
                f"at this address."
            ) from None
        if client.unknown:
            where = ", ".join(str(f) for f in verify_with or ()) or "the user's known_hosts (none exists)"
            raise HostKeyUnknown(
                f"{label}: ssh.verify is true and the host key it offers ({kh.fingerprint(client.offered)}) "
                f"is not in {where}. Check the fingerprint on the host (ssh-keygen -lf "
                f"/etc/ssh/ssh_host_ed25519_key.pub) and add it (ssh once, or ssh-keyscan), or set "
                f"verify: false to trust it on first contact."
            ) from None
        via = "" if ours else " (on the way there: check the ProxyJump host in your SSH config)"
        raise RemoteError(f"{label}: SSH host key check failed{via}: {exc}") from None
    except asyncssh.PermissionDenied:
        how = f"key {key}" if key is not None else "the keys of your SSH config and agent"
        raise RemoteError(f"{label}: SSH login as '{user}' with {how} was refused") from None
    except (TimeoutError, asyncssh.Error, OSError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise RemoteError(f"{label}: cannot connect over SSH: {reason}") from None
    if client.new_key is not None:
        kh.pin(known_hosts, pattern, client.new_key)
    return Remote(conn, address, user=user, port=port or 22, name=name)


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
                      control_dir: Path | None = None, batch: bool = True) -> Path:
    """Writes an OpenSSH client config for the nodes, so ssh(1) and testinfra share our pinning.

    Each node is reachable by name and by IP; host keys are checked strictly against the
    cluster's pinned known_hosts (never ~/.ssh/known_hosts), with the cluster key only.
    `control_dir` turns on connection sharing (testinfra runs one ssh per check: ~130 ms each
    with a master connection instead of a full handshake every time). `batch=False` is for people
    (`kubitect ssh`): ssh may then ask for a key's passphrase.
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
            *(["  BatchMode yes"] if batch else []),
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
