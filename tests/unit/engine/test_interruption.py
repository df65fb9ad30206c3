"""A killed apply resumes without duplicate work; two applies on one cluster never interleave."""

from __future__ import annotations

import os
import signal
import time

from conftest import kubitect_process


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _domain_creations(fakes):
    return [c["name"] for c in fakes.calls() if c["op"] == "create" and c["kind"] == "domain"]


def test_killed_apply_resumes_without_duplicate_work(fake_env, fakes, monkeypatch):
    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0.4")
    proc = kubitect_process("apply", str(fake_env / "ha.yaml"))
    assert _wait_for(lambda: len(_domain_creations(fakes)) >= 2), proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _domain_creations(fakes)
    assert 2 <= len(partial) < 8

    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0")
    rerun = kubitect_process("apply", str(fake_env / "ha.yaml"))
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert "Broke a stale lock left by PID" in out
    created = _domain_creations(fakes)
    assert len(created) == 8 and len(set(created)) == 8, created
    assert created[: len(partial)] == partial


def test_two_concurrent_applies_never_interleave(fake_env, fakes, monkeypatch):
    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0.3")
    first = kubitect_process("apply", str(fake_env / "ha.yaml"))
    assert _wait_for(lambda: len(_domain_creations(fakes)) >= 1)
    second = kubitect_process("apply", str(fake_env / "ha.yaml"))
    out2, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    assert f"being changed by another kubitect process (PID {first.pid})" in out2
    waiting = kubitect_process("apply", str(fake_env / "ha.yaml"), "--wait-lock", "120")
    out1, _ = first.communicate(timeout=120)
    assert first.returncode == 0, out1
    out3, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, out3
    assert "No changes detected." in out3  # it ran after the first one finished, not alongside
    assert len(_domain_creations(fakes)) == 8
    assert os.path.exists(fake_env / "home/clusters/kubitect-ha/applied.yaml")
