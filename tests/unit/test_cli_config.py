"""The config commands as a user runs them: validate, schema, list presets, export preset."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from kubitect_core.cli import app
from kubitect_core.config import list_presets

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "examples" / "ha.yaml"


@pytest.fixture
def run():
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

    def _run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return _run


def test_validate_ha_prints_the_summary(run):
    result = run("validate", "--config", HA)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "2 load balancers, 3 masters, 3 workers over 5 hosts" in out
    assert "VIP: 10.10.13.200" in out and "endpoint: 10.10.13.200:6443" in out
    for host in ("host1", "host2", "host3", "host4", "host5"):
        assert host in out
    host3 = next(line for line in out.splitlines() if line.startswith("host3"))
    assert host3.split()[-3:] == ["0", "1", "1"]  # no LB, one master, one worker
    assert "warning kubernetes.version" in out and "end of life" in out


def test_validate_accepts_positional_and_short_option(run):
    assert run("validate", HA).exit_code == 0
    assert run("validate", "-c", HA).exit_code == 0
    assert run("validate", "-c", HA, HA).exit_code == 0


def test_invalid_config_prints_boxed_errors_and_exits_1(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(HA.read_text().replace("ip: 10.10.13.11", "ip: 10.99.13.11")
                   .replace("distro: ubuntu22", "distro: ubuntu18"))
    result = run("validate", "--config", bad)
    assert result.exit_code == 1
    out = result.output
    assert "Error: cluster.nodes.master.instances[1].ip" in out
    assert f"{bad}:" in out and "inside cluster.network.cidr 10.10.0.0/20" in out
    assert "[ubuntu20|ubuntu22|" in out  # allowed values survive rich markup
    assert "╭" in out and "bad.yaml: 2 errors" in out
    assert "Traceback" not in out


def test_usage_errors_exit_2(run, tmp_path):
    assert run("validate").exit_code == 2
    other = tmp_path / "other.yaml"
    other.write_text(HA.read_text())
    assert run("validate", "-c", HA, other).exit_code == 2
    assert run("export", "preset", "--name", "nope").exit_code == 2
    assert run("export", "preset").exit_code == 2


def test_missing_or_empty_file_is_invalid_not_a_crash(run, tmp_path):
    result = run("validate", tmp_path / "missing.yaml")
    assert result.exit_code == 1 and "does not exist" in result.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = run("validate", empty)
    assert result.exit_code == 1 and "is empty" in result.output


def test_preflight_flag_checks_key_files(run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = run("validate", "--preflight", HA)
    assert result.exit_code == 1 and "id_rsa_ha" in result.output and "does not exist" in result.output
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa_ha").write_text("key")
    result = run("validate", "--preflight", HA)
    assert result.exit_code == 0 and "preflight passed" in result.output


def test_schema_is_json_schema_that_accepts_ha(run):
    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(HA.read_text()), schema)


def test_list_and_export_presets(run):
    result = run("list", "presets")
    assert result.exit_code == 0
    names = [line.strip()[2:] for line in result.stdout.splitlines() if line.strip().startswith("- ")]
    assert result.stdout.startswith("Available presets:") and names == list_presets()
    for name in names:
        exported = run("export", "preset", "--name", name)
        assert exported.exit_code == 0
        assert yaml.safe_load(exported.stdout)["cluster"]["nodes"]["master"]["instances"]


def test_exported_preset_validates(run, tmp_path):
    path = tmp_path / "gs.yaml"
    path.write_text(run("export", "preset", "--name", "getting-started").stdout)
    result = run("validate", path)
    assert result.exit_code == 0 and "1 master, 1 worker over 1 host" in result.stdout


@pytest.mark.parametrize("command", [["validate"], ["schema"], ["list", "presets"], ["export", "preset"]])
def test_help_has_an_example(run, command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Example: kubitect" in result.output


def test_conflicting_plugins_are_named_and_the_consequence_said(run, monkeypatch):
    """Two plugins claiming one stage: validate still runs, and says that no plugin is loaded, so
    the config's plugin choices read as not installed (not that built-ins are used)."""
    import kubitect_core.plugins as plugins
    from kubitect_core.config import context

    def conflicting(*_a, **_kw):
        raise RuntimeError("more than one plugin registers the stage(s) ['vms']")

    monkeypatch.setattr(plugins, "load_registry", conflicting)
    monkeypatch.setattr(context, "_cache", {})
    res = run("validate", HA)
    assert "no plugin loaded: more than one plugin registers the stage(s) ['vms']" in res.output
    assert "will read as not installed" in res.output and "kubitect list plugins" in res.output
    assert "using the built-ins" not in res.output
    assert res.exit_code == 1 and "no installed plugin" in res.output.split("kubitect list plugins")[-1]
