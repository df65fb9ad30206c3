"""Pipeline commands as a CI script drives them: `-o json|yaml` event streams, closing events,
errors as events, `plan --detailed-exitcode`, and every read command's data form.

The CLI runs the real engine with the TEST DOUBLE backends (tests/fixtures/kubitect_fakes.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from kubitect_core.ui import JsonEvents

CLUSTER = "kubitect-ha"
STAGES = ["validate", "network", "storage", "vms", "loadbalancers", "kubernetes", "verify"]


def _events(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON event: anything else fails the test."""
    events = [json.loads(line) for line in stdout.splitlines()]
    assert all(e["v"] == 1 and e["event"] and e["time"] for e in events)
    return events


def _add_worker(cfg) -> None:
    data = yaml.safe_load(cfg.read_text())
    workers = data["cluster"]["nodes"]["worker"]["instances"]
    workers.append({**workers[-1], "id": 9, "ip": "10.10.13.39"})
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))


def test_apply_as_json_is_a_versioned_event_stream_closed_by_a_result(cli, fake_env):
    result = cli("apply", str(fake_env / "ha.yaml"), "-o", "json")
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    assert [e["stage"] for e in events if e["event"] == "stage_started"] == STAGES
    last = events[-1]
    assert last["event"] == "result" and last["command"] == "apply" and last["ok"] is True
    assert [s["stage"] for s in last["stages"]] == STAGES
    assert last["stages"][3]["changes"] == {"create": 8}  # vms: 2 lb + 3 masters + 3 workers
    assert last["log"].endswith("-apply.log") and (fake_env / "home" / "clusters" / CLUSTER / "logs").is_dir()
    again = _events(cli("apply", str(fake_env / "ha.yaml"), "-o", "json").stdout)
    assert again == [again[-1]] and again[-1]["nothing_to_do"] is True
    assert again[-1]["message"] == "No changes detected."


def test_apply_as_yaml_is_the_same_stream_as_yaml_documents(cli, fake_env):
    result = cli("apply", str(fake_env / "ha.yaml"), "-o", "yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("---\n")
    docs = list(yaml.safe_load_all(result.stdout))
    assert all(d["v"] == 1 for d in docs)
    assert [d["stage"] for d in docs if d["event"] == "stage_started"] == STAGES and docs[-1]["event"] == "result"


def test_a_failed_stage_under_json_ends_with_an_error_event_naming_the_log(cli, fake_env, monkeypatch):
    monkeypatch.setenv("KUBITECT_FAKE_FAIL", "vms")
    result = cli("apply", str(fake_env / "ha.yaml"), "-o", "json")
    assert result.exit_code == 1
    events = _events(result.stdout)
    failed = next(e for e in events if e["event"] == "stage_finished" and not e["ok"])
    assert failed["stage"] == "vms" and "fake vms failure" in failed["error"]
    error = events[-1]
    assert error["event"] == "error" and error["kind"] == "stage" and error["stage"] == "vms"
    assert "fake vms failure" in error["message"] and error["exit_code"] == 1
    assert error["log"] and "fake vms failure" in open(error["log"]).read()
    assert result.stderr == ""


def test_refused_changes_under_json_are_an_error_event_with_each_change(cli, fake_env):
    cfg = fake_env / "ha.yaml"
    assert cli("apply", str(cfg)).exit_code == 0
    cfg.write_text(cfg.read_text().replace("ip: 10.10.13.11", "ip: 10.10.13.111"))
    result = cli("apply", str(cfg), "-o", "json", "-y")
    assert result.exit_code == 1
    error = _events(result.stdout)[-1]
    assert error["kind"] == "changes" and error["problems"]
    assert any(p["path"].endswith(".ip") and p["severity"] == "error" for p in error["problems"])
    assert any(c["severity"] == "error" and c["new"] == "10.10.13.111" for c in error["changes"])


def test_plan_detailed_exitcode_0_2_and_1(cli, fake_env, tmp_path):
    cfg = fake_env / "ha.yaml"
    assert cli("plan", str(cfg), "--detailed-exitcode").exit_code == 2, "nothing exists yet: changes pending"
    assert cli("plan", str(cfg)).exit_code == 0, "without the flag, pending changes are success"
    assert cli("apply", str(cfg)).exit_code == 0
    up_to_date = cli("plan", str(cfg), "--detailed-exitcode", "-o", "json")
    assert up_to_date.exit_code == 0
    plan = _events(up_to_date.stdout)[-1]
    assert plan["event"] == "plan" and plan["changes_pending"] is False and plan["pending"] == 0
    _add_worker(cfg)
    refused = cli("plan", str(cfg), "--detailed-exitcode")
    assert refused.exit_code == 1 and "run apply with '--action scale'" in refused.output, "an error is 1"
    pending = cli("plan", str(cfg), "--action", "scale", "--detailed-exitcode", "-o", "json")
    assert pending.exit_code == 2
    plan = _events(pending.stdout)[-1]
    assert plan["changes_pending"] is True
    assert any(c["path"].startswith("cluster.nodes.worker.instances[9]") for c in plan["config_changes"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("ip: 10.10.13.11", "ip: 10.99.13.11"))
    assert cli("plan", str(bad), "--detailed-exitcode").exit_code == 1


def test_plan_detailed_exitcode_turns_a_usage_error_into_1_not_2(fake_env):
    """2 means "changes pending" under --detailed-exitcode, so a usage error must not exit 2."""
    for args in (["plan", "--detailed-exitcode"], ["plan", "--detailed-exitcode", "--bogus", "x.yaml"]):
        proc = subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "kubitect_core.cli", "plan"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2


def test_destroy_and_verify_close_with_a_result(cli, fake_env):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    verified = _events(cli("verify", "--cluster", CLUSTER, "-o", "json").stdout)
    assert verified[-1]["event"] == "result" and verified[-1]["command"] == "verify"
    destroyed = cli("destroy", "--cluster", CLUSTER, "-y", "-o", "json")
    assert destroyed.exit_code == 0
    last = _events(destroyed.stdout)[-1]
    assert last["command"] == "destroy" and last["message"] == f"Cluster '{CLUSTER}' has been destroyed."
    missing = cli("destroy", "--cluster", CLUSTER, "-y", "-o", "json")
    assert missing.exit_code == 1 and _events(missing.stdout)[-1]["kind"] == "error"


def test_read_commands_as_json_and_yaml(cli, fake_env):
    cfg = fake_env / "ha.yaml"
    assert cli("apply", str(cfg)).exit_code == 0
    d = fake_env / "home" / "clusters" / CLUSTER
    (d / "kubeconfig").write_text("apiVersion: v1\nkind: Config\nclusters:\n- name: kubitect-ha\n"
                                  "  cluster: {server: 'https://10.10.13.200:6443'}\n")
    clusters = json.loads(cli("list", "clusters", "-o", "json").stdout)
    assert clusters["v"] == 1 and clusters["kind"] == "cluster-list"
    assert [(c["name"], c["status"], c["local"]) for c in clusters["items"]] == [(CLUSTER, "applied", False)]
    assert yaml.safe_load(cli("list", "clusters", "-o", "yaml").stdout) == clusters
    stages = json.loads(cli("list", "stages", "-o", "json").stdout)
    assert [s["name"] for s in stages["items"]] == STAGES and stages["items"][3]["requires"]
    plugins = json.loads(cli("list", "plugins", "-o", "json").stdout)
    assert any(p["name"] == "kubitect_fakes" for p in plugins["items"])
    assert json.loads(cli("export", "config", "--cluster", CLUSTER, "-o", "json").stdout) == \
        yaml.safe_load(cfg.read_text())
    assert cli("export", "config", "--cluster", CLUSTER, "-o", "yaml").stdout == cfg.read_text()
    kube = json.loads(cli("export", "kubeconfig", "--cluster", CLUSTER, "-o", "json").stdout)
    assert kube["clusters"][0]["cluster"]["server"] == "https://10.10.13.200:6443"
    report = json.loads(cli("export", "report", "--cluster", CLUSTER, "-o", "json").stdout)
    assert report["cluster"] == CLUSTER and report["passed"] >= 1
    assert yaml.safe_load(cli("export", "report", "--cluster", CLUSTER, "-o", "yaml").stdout) == report
    missing = cli("export", "config", "--cluster", "nope", "-o", "json")
    assert missing.exit_code == 1 and json.loads(missing.stdout)["event"] == "error"


def test_event_log_file_is_versioned_and_redacted(tmp_path):
    """events.jsonl keeps every event as one JSON line, with secrets redacted, whatever -o says."""
    import io

    stream = io.StringIO()
    sink = JsonEvents(stream=stream, path=tmp_path / "events.jsonl", format="yaml")
    token = "abcdef.0123456789abcdef"
    sink.kubitect_stage_progress(cluster="c", stage="kubernetes", subject="m1",
                                 message=f"kubeadm join 10.0.0.5:6443 --token {token}")
    line = (tmp_path / "events.jsonl").read_text()
    event = json.loads(line)
    assert event["v"] == 1 and event["event"] == "progress" and token not in line and "<redacted>" in line
    assert stream.getvalue().startswith("---\n") and token not in stream.getvalue()


@pytest.mark.parametrize("args", [["apply"], ["run", "--stage", "vms"], ["destroy", "--cluster", CLUSTER],
                                  ["verify", "--cluster", CLUSTER]])
def test_no_config_or_cluster_yet_under_json_is_still_only_json(cli, fake_env, args):
    result = cli(*args, "-o", "json")
    assert result.exit_code in (1, 2)
    assert _events(result.stdout)[-1]["event"] == "error" and result.stderr == ""
