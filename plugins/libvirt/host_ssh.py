"""How a remote libvirt host is reached over SSH, and why its host key can be trusted.

libvirt's `qemu+ssh` transport runs OpenSSH's ssh(1), which knows the user's ~/.ssh/config
(ProxyJump, Port, IdentityFile, HostName) but takes no known_hosts file from the URI (libvirt
passes `known_hosts=` only to its libssh/libssh2 transports). So the URI names a small wrapper
(`command=`) that runs ssh(1) with the cluster's pinned host keys and strict checking:

    <cluster>/ssh/hosts_known_hosts     the hosts' keys, pinned on first contact
    <cluster>/ssh/libvirt-ssh-<host>    the wrapper for one host

Hosts get a known_hosts file of their own, apart from the nodes' `ssh/known_hosts`: the nodes'
file is handed to every plugin, testinfra and `export_ssh_config` as "the cluster's nodes", and
its entries come and go with nodes (scale-down, addToKnownHosts); a host's key lives as long as
the host is configured. Entries are recorded under the host's configured address
(`HostKeyAlias`), so a HostName or Port from ~/.ssh/config never splits one host into two pins.

First contact happens in `check_host_key`, through asyncssh with the same config files, before
libvirt opens the connection: with `ssh.verify: false` the key is pinned (trust on first use,
then never again); with `verify: true` it must already be in the user's known_hosts. A changed
key is refused with both fingerprints, by asyncssh and by the wrapper's ssh(1) alike.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubitect_core.sdk import known_hosts as kh
from kubitect_core.sdk import remote

HOSTS_KNOWN_HOSTS = "hosts_known_hosts"
WRAPPER_PREFIX = "libvirt-ssh-"
DEFAULT_IDENTITY = "id_rsa"  # Kubitect's default when ssh.keyfile is not set
PROBE_TIMEOUT_S = 8.0


def _q(value: str) -> str:
    """A URI query value: every byte but unreserved ones and '/' percent-encoded (libvirt
    unescapes values), so a path with spaces, '&', '?', '#', '%' or '+' arrives intact."""
    return quote(value, safe="/")


@dataclass(frozen=True)
class HostSsh:
    """SSH access to one remote libvirt host (from `hosts[].connection`)."""

    host: str  # the config's host name (messages, the wrapper's file name)
    address: str  # connection.ip
    user: str
    port: int | None  # None: ~/.ssh/config's Port for the address, else 22
    keyfile: str | None  # None: ~/.ssh/config's IdentityFile for the address
    verify: bool
    ssh_dir: str  # <cluster>/ssh: the pinned hosts file and the wrapper live here

    @property
    def pin_name(self) -> str:
        """The host field of this host's pinned key: its configured address (and port)."""
        return kh.host_pattern(self.address, self.port or 22)

    @property
    def known_hosts(self) -> Path:
        return Path(self.ssh_dir) / HOSTS_KNOWN_HOSTS

    @property
    def wrapper(self) -> Path:
        return Path(self.ssh_dir) / f"{WRAPPER_PREFIX}{self.host}"

    def uri(self) -> str:
        """`qemu+ssh://user@ip[:port]/system?keyfile=..&command=<wrapper>&no_tty=1`.

        No `no_verify=1`: host keys are checked. The port is left out when the config does not
        set one, so ~/.ssh/config's Port applies (ssh's `-p` would override it).
        """
        where = self.address if self.port is None else f"{self.address}:{self.port}"
        params = []
        if self.keyfile:
            params.append(f"keyfile={_q(self.keyfile)}")
        params += [f"command={_q(str(self.wrapper))}", "no_tty=1"]
        return f"qemu+ssh://{self.user}@{where}/system?" + "&".join(params)

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: Any) -> HostSsh | None:
        """The access recorded by an earlier run (for a host since removed from the config)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


def explicit_port(ssh_cfg: Any) -> int | None:
    """`connection.ssh.port` only when the YAML sets it (a pydantic model knows), else None."""
    fields = getattr(ssh_cfg, "model_fields_set", None)
    if fields is not None and "port" not in fields:
        return None
    value = getattr(ssh_cfg, "port", None) if not isinstance(ssh_cfg, dict) else ssh_cfg.get("port")
    return int(value) if value else None


def config_identity(address: str, user: str, port: int | None) -> bool:
    """Whether the user's OpenSSH config names an IdentityFile for this address."""
    files = kh.client_config_files()
    if not files:
        return False
    try:
        from asyncssh.config import SSHClientConfig

        cfg = SSHClientConfig.load(None, [str(f) for f in files], False, False, False,
                                   _local_user(), user, address, port or ())
        return bool(cfg.get("IdentityFile"))
    except Exception:  # noqa: BLE001 - a config asyncssh cannot read: ssh(1) will say what is wrong
        return False


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root"


def default_keyfile(address: str, user: str, port: int | None) -> str | None:
    """The key for a host without `ssh.keyfile`: the one ~/.ssh/config names for it (None: ssh
    and asyncssh read it themselves), else Kubitect's default ~/.ssh/id_rsa."""
    if config_identity(address, user, port):
        return None
    return str(kh.user_ssh_dir() / DEFAULT_IDENTITY)


def host_ssh(host: Any, ssh_dir: Path, get: Any) -> HostSsh:
    """The access of a configured remote host; `get(obj, dotted, default)` reads the config."""
    ssh_cfg = get(host, "connection.ssh")
    address = str(get(host, "connection.ip"))
    user = str(get(host, "connection.user"))
    port = explicit_port(ssh_cfg) if ssh_cfg is not None else None
    keyfile = get(host, "connection.ssh.keyfile")
    keyfile = os.path.expanduser(str(keyfile)) if keyfile else default_keyfile(address, user, port)
    return HostSsh(host=str(get(host, "name")), address=address, user=user, port=port, keyfile=keyfile,
                   verify=bool(get(host, "connection.ssh.verify", False)), ssh_dir=str(ssh_dir))


# --------------------------------------------------------------------------- the wrapper


def wrapper_text(ssh: HostSsh, ssh_binary: str) -> str:
    """The script libvirt runs instead of ssh(1): the same ssh with the pinned file, strictly."""
    args = [ssh_binary, *kh.openssh_config_args(),
            "-o", f"UserKnownHostsFile={ssh.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={ssh.pin_name}",
            "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no", "-o", "BatchMode=yes"]
    return ("#!/bin/sh\n"
            f"# Written by kubitect: libvirt's ssh transport to host {ssh.host}, checking its key\n"
            f"# against the cluster's pinned file. Arguments come from libvirt.\n"
            f"exec {' '.join(shlex.quote(a) for a in args)} \"$@\"\n")


def write_wrapper(ssh: HostSsh) -> Path:
    """Writes (or refreshes) the host's wrapper, 0700, in a 0700 directory."""
    binary = shutil.which("ssh") or "/usr/bin/ssh"
    path = ssh.wrapper
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = wrapper_text(ssh, binary)
    if path.is_file() and path.read_text() == text:
        return path
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- first contact


def check_host_key(ssh: HostSsh, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Connects once as libvirt will (same config files), pinning or checking the host key.

    Raises ConnectionError naming the host: unreachable within `timeout` (libvirt's ssh would
    wait for the TCP timeout, minutes), key changed (both fingerprints), key unknown with
    `verify: true`, or login refused. Runs on the host's libvirt worker thread (its own loop).
    """
    async def probe() -> None:
        conn = await remote.connect(
            ssh.address, user=ssh.user, key=Path(ssh.keyfile) if ssh.keyfile else None,
            known_hosts=ssh.known_hosts, port=ssh.port, timeout=timeout, name=ssh.host, kind="host",
            pin_as=ssh.pin_name, ssh_config=kh.client_config_files(),
            verify_with=kh.user_known_hosts_files() if ssh.verify else None, use_agent=True)
        await conn.close()

    ssh.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        asyncio.run(probe())
    except remote.RemoteError as exc:
        raise ConnectionError(f"{exc} (check the connection of host '{ssh.host}' in hosts[] and your "
                              f"SSH config)") from None


def forget(ssh: HostSsh) -> None:
    """Forgets a host's pinned key (the host left the cluster)."""
    remote.forget_host(ssh.known_hosts, ssh.address, name=ssh.pin_name)
