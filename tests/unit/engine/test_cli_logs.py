"""Run logs as a user meets them: a failure names its log, `--debug` shows it live, `export logs`
bundles them. (What goes into a log, node by node, is tests/unit/test_runlog.py and the lab test.)

The CLI runs the real engine with the TEST DOUBLE backends (tests/fixtures/kubitect_fakes.py).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile

CLUSTER = "kubitect-ha"


def _logs(fake_env):
    d = fake_env / "home" / "clusters" / CLUSTER / "logs"
    return sorted(d.iterdir()) if d.is_dir() else []


def test_a_failure_message_ends_with_the_log_path(cli, fake_env, monkeypatch):
    monkeypatch.setenv("KUBITECT_FAKE_FAIL", "loadbalancer")
    result = cli("apply", str(fake_env / "ha.yaml"))
    assert result.exit_code == 1
    (log,) = _logs(fake_env)
    assert result.stderr.rstrip().splitlines()[-1] == f"Log: {log}"
    text = log.read_text()
    assert "stage loadbalancers apply FAILED" in text and "fake loadbalancer failure" in text
    assert "Traceback (most recent call last)" in text, "the traceback is kept for a bug report"
    assert "Traceback" not in result.output, "and never shown to the user"


def test_each_run_gets_its_own_log_and_a_successful_run_names_none(cli, fake_env):
    cfg = str(fake_env / "ha.yaml")
    first = cli("apply", cfg)
    assert first.exit_code == 0 and "Log:" not in first.output
    assert cli("run", "--stage", "network", cfg).exit_code == 0
    assert cli("verify", "--cluster", CLUSTER).exit_code == 0
    names = [p.name for p in _logs(fake_env)]
    assert [n.rsplit("-", 1)[1] for n in names] == ["apply.log", "run.log", "verify.log"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in _logs(fake_env))


def test_debug_shows_the_log_live_on_stderr_and_keeps_stdout_for_output(cli, fake_env):
    quiet = cli("apply", str(fake_env / "ha.yaml"), "--reconcile")
    assert "stage vms apply started" not in quiet.output
    for args in (["apply", str(fake_env / "ha.yaml"), "--reconcile", "--debug"],
                 ["--debug", "apply", str(fake_env / "ha.yaml"), "--reconcile"]):
        result = cli(*args)
        assert result.exit_code == 0
        assert "[vms] stage vms apply started" in result.stderr and "stage vms apply started" not in result.stdout
        assert "keep domain kubitect-ha-master-1 on host3" in result.stdout, "--debug lists every change"
    as_json = cli("apply", str(fake_env / "ha.yaml"), "--reconcile", "--debug", "-o", "json")
    assert [json.loads(line)["v"] for line in as_json.stdout.splitlines()]
    assert "stage vms apply started" in as_json.stderr


def test_a_stage_failure_under_debug_shows_the_traceback(cli, fake_env, monkeypatch):
    monkeypatch.setenv("KUBITECT_FAKE_FAIL", "vms")
    result = cli("apply", str(fake_env / "ha.yaml"), "--debug")
    assert result.exit_code == 1 and "RuntimeError: fake vms failure" in result.stderr


def test_export_logs_bundles_the_logs_and_events_privately(cli, fake_env, monkeypatch):
    cfg = str(fake_env / "ha.yaml")
    assert cli("apply", cfg).exit_code == 0
    assert cli("verify", "--cluster", CLUSTER).exit_code == 0
    monkeypatch.chdir(fake_env)
    result = cli("export", "logs", "--cluster", CLUSTER)
    assert result.exit_code == 0, result.output
    (bundle,) = fake_env.glob(f"{CLUSTER}-logs-*.tar.gz")
    assert f"Wrote {bundle.name} (3 files" in result.stdout
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    with tarfile.open(bundle) as tar:
        names = sorted(m.name.split("/", 1)[1] for m in tar.getmembers())
        assert names[0] == "events.jsonl" and [n.rsplit("-", 1)[1] for n in names[1:]] == ["apply.log", "verify.log"]
        log = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("apply.log"))).read().decode()
        assert "stage kubernetes apply started" in log
    again = cli("export", "logs", "--cluster", CLUSTER, "--file", bundle.name)
    assert again.exit_code == 2 and "does not overwrite" in again.output


def test_export_logs_to_a_named_file_as_json_and_to_stdout(cli, fake_env):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    target = fake_env / "out" / "bundle.tar.gz"
    target.parent.mkdir()
    doc = json.loads(cli("export", "logs", "--cluster", CLUSTER, "-f", str(target), "-o", "json").stdout)
    assert doc["v"] == 1 and doc["kind"] == "log-bundle" and doc["file"] == str(target)
    assert doc["bytes"] == target.stat().st_size and len(doc["files"]) == 2
    proc = subprocess.run([sys.executable, "-m", "kubitect_core.cli", "export", "logs", "--cluster", CLUSTER,
                           "--file", "-"], capture_output=True, timeout=60, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        assert len(tar.getmembers()) == 2


def test_export_logs_of_a_cluster_without_logs_or_that_does_not_exist(cli, fake_env):
    missing = cli("export", "logs", "--cluster", "nope")
    assert missing.exit_code == 1 and "cluster 'nope' does not exist" in missing.output
    (fake_env / "home" / "clusters" / "empty").mkdir(parents=True)
    empty = cli("export", "logs", "--cluster", "empty")
    assert empty.exit_code == 1 and "has no logs yet" in empty.output


def test_destroy_leaves_no_log_behind(cli, fake_env):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    assert cli("destroy", "--cluster", CLUSTER, "-y").exit_code == 0
    assert not (fake_env / "home" / "clusters" / CLUSTER).exists()
