"""The pipeline as a user drives it: apply, re-apply, run, plan, destroy, list, export."""

from __future__ import annotations

import json

import yaml

STAGES = ["validate", "network", "storage", "vms", "loadbalancers", "kubernetes", "verify"]


def _stage_calls(fakes):
    return [c["stage"] for c in fakes.calls() if c["op"] == "call"]


def _json_events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_apply_runs_the_seven_stages_in_order(cli, fake_env, fakes):
    result = cli("apply", "--config", str(fake_env / "ha.yaml"), "--output", "json")
    assert result.exit_code == 0, result.output
    started = [e["stage"] for e in _json_events(result.output) if e["event"] == "stage_started"]
    assert started == STAGES
    assert _stage_calls(fakes) == ["network", "storage", "vms", "loadbalancer", "kubernetes"]
    objects = fakes.objects()
    assert sum(k.startswith("domain/") for k in objects) == 8  # 2 lb + 3 masters + 3 workers
    assert "domain/kubitect-ha-lb-1" in objects


def test_second_apply_reports_no_changes_and_calls_nothing(cli, fake_env, fakes):
    cfg = str(fake_env / "ha.yaml")
    assert cli("apply", cfg).exit_code == 0
    before = len(fakes.calls())
    result = cli("apply", cfg)
    assert result.exit_code == 0
    assert "No changes detected." in result.output
    assert len(fakes.calls()) == before


def test_reconcile_reruns_every_stage_without_creating_anything(cli, fake_env, fakes):
    cfg = str(fake_env / "ha.yaml")
    assert cli("apply", cfg).exit_code == 0
    creations = [c for c in fakes.calls() if c["op"] == "create"]
    result = cli("apply", cfg, "--reconcile", "--output", "json")
    assert result.exit_code == 0
    finished = [e for e in _json_events(result.output) if e["event"] == "stage_finished"]
    assert [e["stage"] for e in finished] == STAGES
    assert all(c["action"] == "keep" for e in finished for c in e["changes"])
    assert [c for c in fakes.calls() if c["op"] == "create"] == creations


def test_run_stage_refuses_before_its_prerequisites_ever_ran(cli, fake_env, fakes):
    result = cli("run", "--stage", "vms", str(fake_env / "ha.yaml"))
    assert result.exit_code == 1
    assert "stage 'vms' needs stage(s) network, storage" in result.output
    assert fakes.calls() == []


def test_run_stage_runs_only_validate_and_the_named_stage(cli, fake_env, fakes):
    cfg = str(fake_env / "ha.yaml")
    assert cli("run", "--stage", "network", "--stage", "storage", cfg).exit_code == 0
    assert _stage_calls(fakes) == ["network", "storage"]
    result = cli("run", "--stage", "vms", cfg, "--output", "json")
    assert result.exit_code == 0, result.output
    started = [e["stage"] for e in _json_events(result.output) if e["event"] == "stage_started"]
    assert started == ["validate", "vms"]
    assert _stage_calls(fakes) == ["network", "storage", "vms"]


def test_run_rejects_an_unknown_stage_naming_the_real_ones(cli, fake_env):
    result = cli("run", "--stage", "vm", str(fake_env / "ha.yaml"))
    assert result.exit_code == 1
    assert "unknown stage(s) vm" in result.output and "loadbalancers" in result.output


def test_plan_lists_creations_and_touches_nothing(cli, fake_env, fakes, tmp_path):
    result = cli("plan", str(fake_env / "ha.yaml"))
    assert result.exit_code == 0, result.output
    assert "create domain kubitect-ha-master-1 on host3" in result.output
    assert fakes.objects() == {}
    assert not (tmp_path / "home" / "clusters" / "kubitect-ha").exists()


def test_destroy_removes_every_object_and_the_cluster_directory(cli, fake_env, fakes, tmp_path):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    assert fakes.objects()
    result = cli("destroy", "--cluster", "kubitect-ha", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert fakes.objects() == {}
    assert not (tmp_path / "home" / "clusters" / "kubitect-ha").exists()
    assert "No clusters yet" in cli("list", "clusters").output


def test_destroy_of_an_unknown_cluster_says_so(cli):
    result = cli("destroy", "--cluster", "nope", "--auto-approve")
    assert result.exit_code == 1
    assert "cluster 'nope' does not exist" in result.output


def test_failed_stage_is_recorded_and_a_rerun_continues(cli, fake_env, fakes, monkeypatch, tmp_path):
    cfg = str(fake_env / "ha.yaml")
    monkeypatch.setenv("KUBITECT_FAKE_FAIL", "loadbalancer")
    result = cli("apply", cfg)
    assert result.exit_code == 1
    assert "fake loadbalancer failure" in result.output
    record = json.loads((tmp_path / "home/clusters/kubitect-ha/record.json").read_text())
    assert record["stages"]["loadbalancers"]["status"] == "failed"
    assert "failed at loadbalancers" in cli("list", "clusters").output
    monkeypatch.delenv("KUBITECT_FAKE_FAIL")
    created_before = [c for c in fakes.calls() if c["op"] == "create"]
    assert cli("apply", cfg).exit_code == 0
    created_after = [c for c in fakes.calls() if c["op"] == "create"]
    names = [c["name"] for c in created_after]
    assert len(names) == len(set(names)), "an object was created twice"
    assert {c["kind"] for c in created_after[len(created_before):]} == {"loadbalancer", "kubernetes"}


def test_export_config_prints_the_raw_config_as_given(cli, fake_env):
    cfg = fake_env / "ha.yaml"
    assert cli("apply", str(cfg)).exit_code == 0
    result = cli("export", "config", "--cluster", "kubitect-ha")
    assert result.exit_code == 0
    assert result.output == cfg.read_text()


def test_state_files_hold_raw_config_and_private_key(cli, fake_env, tmp_path):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    d = tmp_path / "home/clusters/kubitect-ha"
    assert (d / "applied.yaml").read_text() == (fake_env / "ha.yaml").read_text()
    assert (d / "ssh/id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (d / "ssh/id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert "default" not in yaml.safe_load((d / "applied.yaml").read_text())["hosts"][0]
    events = [json.loads(x) for x in (d / "events.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in events} == set(STAGES)


def test_changed_ip_is_refused_before_anything_runs(cli, fake_env, fakes):
    cfg = fake_env / "ha.yaml"
    assert cli("apply", str(cfg)).exit_code == 0
    before = len(fakes.calls())
    cfg.write_text(cfg.read_text().replace("10.10.13.22", "10.10.13.23"))
    result = cli("apply", str(cfg))
    assert result.exit_code == 1
    assert "cluster.nodes.worker.instances[3].ip" in result.output
    assert "A node's IP address cannot be changed." in result.output
    assert len(fakes.calls()) == before


def test_scale_adds_a_worker(cli, fake_env, fakes):
    cfg = fake_env / "ha.yaml"
    assert cli("apply", str(cfg)).exit_code == 0
    data = yaml.safe_load(cfg.read_text())
    data["cluster"]["nodes"]["worker"]["instances"].append({"id": 4, "ip": "10.10.13.23", "host": "host3"})
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = cli("apply", str(cfg))
    assert refused.exit_code == 1 and "--action scale" in refused.output
    result = cli("apply", str(cfg), "--action", "scale")
    assert result.exit_code == 0, result.output
    assert "domain/kubitect-ha-worker-4" in fakes.objects()


def test_list_stages_shows_the_pipeline_in_order(cli):
    out = cli("list", "stages").output
    positions = [out.index(f" {s} ") for s in STAGES]
    assert positions == sorted(positions)


def test_verify_reports_and_fails_naming_the_broken_check(cli, fake_env, fakes, tmp_path):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    report_path = tmp_path / "home/clusters/kubitect-ha/reports/conformance.json"
    ok = cli("verify", "--cluster", "kubitect-ha", "--junit", str(tmp_path / "j.xml"))
    assert ok.exit_code == 0, ok.output
    report = json.loads(report_path.read_text())
    assert (report["passed"], report["failed"]) == (1, 0)
    assert (tmp_path / "j.xml").read_text().count("<testcase") == 1
    shown = cli("export", "report", "--cluster", "kubitect-ha")
    assert shown.exit_code == 0 and "Conformance of cluster 'kubitect-ha': 1 passed, 0 failed" in shown.output

    hv = fake_env / "fake" / "hypervisor.json"
    objects = json.loads(hv.read_text())
    del objects["domain/kubitect-ha-worker-2"]
    hv.write_text(json.dumps(objects))
    bad = cli("verify", "--cluster", "kubitect-ha")
    assert bad.exit_code == 1
    assert "conformance failed: test_every_node_exists_in_the_fake_hypervisor" in bad.output
    assert "kubitect-ha-worker-2" in json.loads(report_path.read_text())["cases"][0]["message"]


def test_skipped_stage_lets_the_rest_run_and_keeps_the_config_unapplied(cli, fake_env, fakes, monkeypatch,
                                                                        tmp_path):
    monkeypatch.setenv("KUBITECT_FAKE_OFFLINE", "pkgs.k8s.io unreachable")
    result = cli("apply", str(fake_env / "ha.yaml"))
    assert result.exit_code == 0, result.output
    assert "Stage 'kubernetes' was skipped: Kubernetes cannot be installed from here: pkgs.k8s.io" \
        in result.output
    record = json.loads((tmp_path / "home/clusters/kubitect-ha/record.json").read_text())
    assert record["stages"]["kubernetes"]["status"] == "skipped"
    assert record["stages"]["verify"]["status"] == "completed"
    assert not (tmp_path / "home/clusters/kubitect-ha/applied.yaml").exists()
    monkeypatch.delenv("KUBITECT_FAKE_OFFLINE")
    again = cli("apply", str(fake_env / "ha.yaml"))
    assert "No changes detected." not in again.output
    assert "kubernetes/kubitect-ha-kubernetes" in fakes.objects()


def test_destroy_skips_layers_that_never_ran_but_always_sweeps_machines(cli, fake_env, fakes):
    cfg = str(fake_env / "ha.yaml")
    assert cli("run", "--stage", "network", "--stage", "storage", "--stage", "vms", cfg).exit_code == 0
    assert cli("destroy", "--cluster", "kubitect-ha", "-y").exit_code == 0
    destroyed = [c["stage"] for c in fakes.calls() if c["op"] == "call" and c["stage"].startswith("destroy-")]
    assert destroyed == ["destroy-vms", "destroy-storage", "destroy-network"]
    assert fakes.objects() == {}


def test_a_plugin_that_fails_to_import_is_reported_by_name(cli, monkeypatch):
    monkeypatch.setenv("KUBITECT_PLUGINS", "kubitect_fakes,kubitect_no_such_plugin")
    result = cli("list", "stages")
    assert result.exit_code == 0
    assert "Plugin 'kubitect_no_such_plugin' failed to load and is ignored" in result.output
    assert "ModuleNotFoundError" in result.output


def test_destroy_after_a_failed_validate_contacts_no_host(cli, fake_env, fakes, monkeypatch):
    (fake_env / ".ssh" / "id_rsa_ha").unlink()
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 1  # preflight: the key file is missing
    assert cli("destroy", "--cluster", "kubitect-ha", "-y").exit_code == 0
    assert [c for c in fakes.calls() if c["op"] == "call"] == []


def test_destroy_with_a_lost_record_still_sweeps_the_machines(cli, fake_env, fakes, tmp_path):
    assert cli("apply", str(fake_env / "ha.yaml")).exit_code == 0
    (tmp_path / "home/clusters/kubitect-ha/record.json").unlink()
    assert cli("destroy", "--cluster", "kubitect-ha", "-y").exit_code == 0
    machine_kinds = ("network/", "pool/", "volume/", "domain/")
    assert [k for k in fakes.objects() if k.startswith(machine_kinds)] == []
