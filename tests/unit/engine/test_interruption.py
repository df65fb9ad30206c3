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


def test_sigterm_is_handled_like_ctrl_c_and_the_stage_is_marked_interrupted(cli, fake_env, fakes, monkeypatch):
    import json

    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0.4")
    proc = kubitect_process("apply", str(fake_env / "ha.yaml"))
    assert _wait_for(lambda: len(_domain_creations(fakes)) >= 2), proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "Terminated" in out and "Traceback" not in out
    record = json.loads((fake_env / "home/clusters/kubitect-ha/record.json").read_text())
    assert record["stages"]["vms"]["status"] == "interrupted"
    assert "interrupted at vms" in cli("list", "clusters").output

    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0")
    rerun = kubitect_process("apply", str(fake_env / "ha.yaml"))
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    created = _domain_creations(fakes)
    assert len(created) == 8 and len(set(created)) == 8


def test_after_a_destroy_a_waiting_apply_and_a_new_apply_never_both_hold_the_lock(fake_env, fakes, monkeypatch):
    """The lock used to live in the directory destroy removes: the waiting apply then held the
    old (deleted) lock file and a new apply a fresh one, and both ran at once."""
    stages = [a for s in ("network", "storage", "vms") for a in ("--stage", s)]
    setup = kubitect_process("run", str(fake_env / "ha.yaml"), *stages)
    assert setup.wait(timeout=120) == 0, setup.communicate()[0]

    monkeypatch.setenv("KUBITECT_FAKE_SLOW_DESTROY", "1.5")
    destroy = kubitect_process("destroy", "--cluster", "kubitect-ha", "-y")
    assert _wait_for(lambda: any(c.get("stage") == "destroy-vms" for c in fakes.calls()))
    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0.5")
    monkeypatch.setenv("KUBITECT_FAKE_SLOW_DESTROY", "0")
    waiting = kubitect_process("run", str(fake_env / "ha.yaml"), *stages, "--wait-lock", "120")
    out_d, _ = destroy.communicate(timeout=120)
    assert destroy.returncode == 0, out_d
    created_before = len(_domain_creations(fakes))
    assert _wait_for(lambda: len(_domain_creations(fakes)) > created_before), "the waiting apply never ran"
    second = kubitect_process("run", str(fake_env / "ha.yaml"), *stages)
    out2, _ = second.communicate(timeout=60)
    assert second.returncode == 1, out2
    assert f"being changed by another kubitect process (PID {waiting.pid})" in out2
    out1, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, out1


def test_the_config_applied_is_the_config_validated_even_if_the_file_changes_meanwhile(fake_env, fakes,
                                                                                       monkeypatch):
    """apply used to read the file three times: an edit made during a long apply was stored as
    applied (so the next apply saw "No changes") without ever being applied."""
    cfg = fake_env / "ha.yaml"
    original = cfg.read_text()
    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0.3")
    stages = [a for s in ("network", "storage", "vms", "loadbalancers", "kubernetes") for a in ("--stage", s)]
    proc = kubitect_process("run", str(cfg), *stages)
    assert _wait_for(lambda: len(_domain_creations(fakes)) >= 1), proc.communicate()[0]
    edited = original.replace("10.10.13.22", "10.10.13.99")
    cfg.write_text(edited)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    d = fake_env / "home/clusters/kubitect-ha"
    assert (d / "config.yaml").read_text() == original
    assert fakes.objects()["domain/kubitect-ha-worker-3"]["spec"]["ip"] == "10.10.13.22"

    monkeypatch.setenv("KUBITECT_FAKE_SLOW", "0.3")
    cfg.write_text(original)
    seen = len(fakes.calls())
    proc = kubitect_process("apply", str(cfg))
    assert _wait_for(lambda: any(c.get("stage") == "network" for c in fakes.calls()[seen:]))  # file read
    cfg.write_text(edited)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert (d / "applied.yaml").read_text() == original
    again = kubitect_process("apply", str(cfg))
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 1 and "A node's IP address cannot be changed." in out
