"""A qemu+ssh host whose SSH port does not answer fails fast, naming the host (loopback only)."""

import socket
import time

import pytest
from kubitect_plugins.libvirt.connection import _probe_ssh_endpoint


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes: connecting is refused


def test_unanswered_ssh_port_is_a_clear_error():
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"host host1: 127.0.0.1:{port} does not answer SSH"):
        _probe_ssh_endpoint("host1", f"qemu+ssh://kubitect@127.0.0.1:{port}/system?keyfile=/k")
    assert time.monotonic() - t0 < 5


def test_local_uris_are_not_probed():
    _probe_ssh_endpoint("local", "qemu:///system")
    _probe_ssh_endpoint("test", "test:///default")
