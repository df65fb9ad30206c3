"""One small remote-execution layer over asyncssh, used by every plugin that touches a node.

Host keys are pinned per cluster: the first contact records the node's key in the cluster's
known_hosts file; a changed key afterwards is an error (`HostKeyChanged`), never a silent accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


class Remote:
    """A connection to one node. Obtain with `connect()` or `wait_reachable()`."""

    address: str

    async def run(self, command: str, *, check: bool = True, sudo: bool = False,
                  timeout: float | None = None, input: str | None = None) -> Result:
        """Runs a shell command; with check=True a non-zero exit raises RemoteError."""
        raise NotImplementedError

    async def put(self, data: bytes | str, path: str, *, mode: int = 0o644, sudo: bool = False) -> None:
        """Writes `data` to `path` atomically (temp file + rename), with `mode`."""
        raise NotImplementedError

    async def get(self, path: str, *, sudo: bool = False) -> bytes:
        """Reads a file from the node."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def connect(address: str, *, user: str, key: Path, known_hosts: Path, port: int = 22,
                  timeout: float = 10.0) -> Remote:
    """Opens one connection, pinning the host key in `known_hosts` on first contact."""
    raise NotImplementedError


async def wait_reachable(address: str, *, user: str, key: Path, known_hosts: Path, port: int = 22,
                         timeout: float = 300.0) -> Remote:
    """Retries `connect` until it succeeds or `timeout` passes (then RemoteError)."""
    raise NotImplementedError
