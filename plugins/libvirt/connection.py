"""One libvirt connection per host, opened once and driven from its own worker thread.

libvirt-python blocks the calling thread for every RPC (over qemu+ssh that is a network round
trip), so each host gets a single-thread executor that owns its connection: calls for one host
run in order, different hosts run concurrently, and the asyncio loop never blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubitect_core.sdk import lazy_import

from .host_ssh import HostSsh, check_host_key, write_wrapper

libvirt = lazy_import("libvirt")  # loaded on first use (fast start: kubitect_core.sdk.lazy)

T = TypeVar("T")

_handler_lock = threading.Lock()
_handler_set = False


def quiet_libvirt() -> None:
    """Stops libvirt printing every error to stderr: errors reach us as exceptions anyway."""
    global _handler_set
    with _handler_lock:
        if not _handler_set:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            _handler_set = True


class HostConnection:
    """A host's libvirt connection and the one thread allowed to use it during a run."""

    def __init__(self, host: str, uri: str, ssh: HostSsh | None = None):
        self.host = host
        self.uri = uri
        self.ssh = ssh  # a remote host: its key is pinned or checked before libvirt connects
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"libvirt-{host}")
        self._conn: libvirt.virConnect | None = None
        # Import the bindings and register the error handler here, in the thread that sets up the
        # run, not first inside several hosts' worker threads at once: with the import done there
        # (lazily, fast start), concurrent first opens deadlocked inside libvirt.open (five hosts,
        # tests/libvirt/test_plan_presets.py, reproduced with cold .pyc caches).
        quiet_libvirt()

    def _open(self) -> libvirt.virConnect:
        if self._conn is None:
            quiet_libvirt()
            if self.ssh is not None:
                write_wrapper(self.ssh)
                check_host_key(self.ssh)
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise ConnectionError(f"host {self.host}: cannot open libvirt at {self.uri}: {exc}") from exc
        return self._conn

    @property
    def conn(self) -> libvirt.virConnect:
        """The open connection (opened on first use). Tests inspect state through it."""
        return self._pool.submit(self._open).result()

    async def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """Runs `fn(conn)` on this host's worker thread, so blocking libvirt calls stay off the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._open()))

    @property
    def is_test_driver(self) -> bool:
        return self.uri.startswith("test:")

    @property
    def is_local(self) -> bool:
        """A URI without a host part (qemu:///system): libvirt runs on this machine."""
        return self.uri.split("://", 1)[-1].startswith("/")

    @property
    def guests_here(self) -> bool:
        """Whether this host's guests run on this machine (a local host, not the test driver): their
        files, such as the boot console logs kubitect names, are then files here."""
        return self.is_local and not self.is_test_driver

    def close(self) -> None:
        """Closes the connection on its own thread and stops the worker."""
        def _close() -> None:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
        self._pool.submit(_close).result()
        self._pool.shutdown(wait=True)


class ConnectionCache:
    """The provider's connections, keyed by host and URI, kept for the whole process run.

    Why kept: a `test:///default` connection *is* its state (every open is a fresh private
    driver), and over qemu+ssh opening costs an SSH handshake; the stages of one run reuse it.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], HostConnection] = {}
        self._lock = threading.Lock()

    def get(self, host: str, uri: str, ssh: HostSsh | None = None) -> HostConnection:
        with self._lock:
            key = (host, uri)
            if key not in self._by_key:
                self._by_key[key] = HostConnection(host, uri, ssh)
            return self._by_key[key]

    def find(self, host: str) -> HostConnection | None:
        with self._lock:
            for (name, _uri), hc in self._by_key.items():
                if name == host:
                    return hc
        return None

    def close_all(self) -> None:
        with self._lock:
            items = list(self._by_key.values())
            self._by_key.clear()
        for hc in items:
            hc.close()


def is_missing(exc: libvirt.libvirtError) -> bool:
    """True for the "no such domain/network/pool/volume" errors that mean "absent", not "broken"."""
    return exc.get_error_code() in (
        libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_INTERFACE)


def lookup(fn: Callable[[str], Any], name: str) -> Any | None:
    """`fn(name)` or None when the object does not exist."""
    try:
        return fn(name)
    except libvirt.libvirtError as exc:
        if is_missing(exc):
            return None
        raise


def ignore_missing(step: Callable[[], Any]) -> None:
    """Runs one removal step; an object already gone (removed by someone else between a listing
    and this step, or a pool that was transient) counts as removed."""
    try:
        step()
    except libvirt.libvirtError as exc:
        if not is_missing(exc):
            raise
