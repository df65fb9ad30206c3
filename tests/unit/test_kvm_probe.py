"""The KVM-or-emulation probe: asked once per host identity and remembered until the host changes,
and never "kvm" without a booted kernel to prove it (a broken nested KVM runs the firmware, then
hangs in the guest kernel).

The guests themselves run in the e2e tier (tests/e2e/test_libvirt_vms.py); here a stand-in
connection answers what libvirt would (versions, capabilities) and `guest_prints` is replaced by a
recorder, so the decisions and the cache are exercised without a hypervisor.
"""

from __future__ import annotations

import time

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from kubitect_plugins.libvirt import hosttype  # noqa: E402

KVM_CAPS = "<domainCapabilities><domain>kvm</domain></domainCapabilities>"


class FakeConn:
    """What the probe reads off a libvirt connection to a (remote) QEMU host."""

    def __init__(self, uri="qemu+ssh://root@host-a/system", qemu=8002004, caps=KVM_CAPS):
        self.uri, self.qemu, self.caps = uri, qemu, caps

    def getType(self):
        return "QEMU"

    def getURI(self):
        return self.uri

    def getHostname(self):
        return "host-a"

    def getLibVersion(self):
        return 9000000

    def getVersion(self):
        return self.qemu

    def getCapabilities(self):
        return "<capabilities><host><cpu><model>x</model></cpu></host></capabilities>"

    def getDomainCapabilities(self, *args):
        return self.caps


@pytest.fixture
def guests(monkeypatch):
    """Records every probe guest: (virt type, kernel or None); `runs` says whether it gets far."""
    booted: list[tuple[str, str | None]] = []
    state = {"kernel_runs": True, "firmware_runs": True}

    def fake(conn, virt_type, seconds=0.0, kernel=None):
        booted.append((virt_type, kernel))
        return state["kernel_runs"] if kernel else state["firmware_runs"]

    monkeypatch.setattr(hosttype, "guest_prints", fake)
    monkeypatch.delenv(hosttype.ENV, raising=False)
    return booted, state


def test_answer_is_remembered_until_the_host_changes(tmp_path, guests):
    booted, _ = guests
    cache = tmp_path / "cache" / hosttype.CACHE_FILE
    assert hosttype.probe(FakeConn(), "/pool/vmlinuz", cache=cache) == "kvm"
    assert booted == [("kvm", "/pool/vmlinuz")]
    # A second run (a new process reads the file): no guest at all.
    answer, how = hosttype.probe_detail(FakeConn(), "/pool/vmlinuz", cache=cache)
    assert (answer, len(booted)) == ("kvm", 1) and how.startswith("remembered")
    # A plan may use what is remembered (it starts no guest, but needs none here).
    assert hosttype.probe(FakeConn(), None, allow_guest=False, cache=cache) == "kvm"
    # QEMU upgraded on that host: asked again.
    assert hosttype.probe(FakeConn(qemu=9000000), "/pool/vmlinuz", cache=cache) == "kvm"
    assert len(booted) == 2
    # Another host (URI) has its own entry.
    hosttype.probe(FakeConn(uri="qemu+ssh://root@host-b/system"), "/pool/vmlinuz", cache=cache)
    assert len(booted) == 3


def test_a_kernel_that_does_not_boot_means_emulation_and_is_remembered(tmp_path, guests):
    booted, state = guests
    state["kernel_runs"] = False
    cache = tmp_path / hosttype.CACHE_FILE
    assert hosttype.probe(FakeConn(), "/pool/vmlinuz", cache=cache) == "qemu"
    assert hosttype.probe(FakeConn(), "/pool/vmlinuz", cache=cache) == "qemu"
    assert len(booted) == 1


def test_no_kernel_and_a_running_firmware_fails_fast_with_the_reason_and_the_override(tmp_path, guests,
                                                                                      monkeypatch):
    """The defect: an image without a kernel beside it made the probe trust the firmware and
    answer kvm on a host whose KVM hangs guests, so every VM waited out its readiness timeout."""
    booted, state = guests
    cache = tmp_path / hosttype.CACHE_FILE
    t0 = time.monotonic()
    with pytest.raises(hosttype.ProbeUnproven) as err:
        hosttype.probe(FakeConn(), None, cache=cache)
    assert time.monotonic() - t0 < 5
    message = str(err.value)
    assert "host-a" in message and "no kernel" in message
    assert f"{hosttype.ENV}=kvm" in message and f"{hosttype.ENV}=qemu" in message
    assert booted == [("kvm", None)]
    assert not cache.exists()  # nothing unproven is remembered
    # With the override, no probe at all.
    monkeypatch.setenv(hosttype.ENV, "qemu")
    assert hosttype.probe(FakeConn(), None, cache=cache) == "qemu"
    assert len(booted) == 1


def test_no_kernel_and_no_firmware_means_emulation(tmp_path, guests):
    booted, state = guests
    state["firmware_runs"] = False
    assert hosttype.probe(FakeConn(), None, cache=tmp_path / "c.json") == "qemu"


def test_local_host_boots_its_own_kernel_when_readable(tmp_path, guests, monkeypatch):
    booted, _ = guests
    own = tmp_path / "vmlinuz-test"
    own.write_bytes(b"kernel")
    own.chmod(0o600)
    monkeypatch.setattr(hosttype, "_own_kernel", lambda: own)
    assert hosttype.probe(FakeConn(uri="qemu:///system"), None, cache=tmp_path / "c.json") == "kvm"
    ((virt, used),) = booted
    assert virt == "kvm" and used != str(own) and used.endswith("/vmlinuz")  # a readable copy, gone now
    assert not (tmp_path / used).exists()


def test_without_kvm_capabilities_no_guest_is_started(tmp_path, guests):
    booted, _ = guests
    no_kvm = FakeConn(caps="<domainCapabilities><domain>qemu</domain></domainCapabilities>")
    assert hosttype.probe(no_kvm, None, cache=tmp_path / "c.json") == "qemu"
    assert booted == []


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, guests):
    booted, _ = guests
    cache = tmp_path / hosttype.CACHE_FILE
    cache.write_text("{not json")
    assert hosttype.probe(FakeConn(), "/k", cache=cache) == "kvm"
    assert hosttype.probe(FakeConn(), "/k", cache=cache) == "kvm"
    assert len(booted) == 1
