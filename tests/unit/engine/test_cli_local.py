"""`--local`, as Kubitect has it: the cluster lives in ./.kubitect (the project directory) and its
name gets the reserved `local-` prefix, so its machines never collide with a global cluster made
from the same config; commands that take `--cluster local-...` find it there.

The CLI runs the real engine with the TEST DOUBLE backends (tests/fixtures/kubitect_fakes.py).
"""

from __future__ import annotations

import json

import pytest

NAME = "kubitect-ha"
LOCAL = f"local-{NAME}"


@pytest.fixture
def project(fake_env, monkeypatch):
    """The user's project directory (the cwd), holding the config."""
    d = fake_env / "project"
    d.mkdir()
    (d / "ha.yaml").write_text((fake_env / "ha.yaml").read_text())
    monkeypatch.chdir(d)
    return d


def test_apply_local_keeps_the_cluster_in_the_project_with_prefixed_names(cli, project, fake_env, fakes):
    result = cli("apply", "--local", "ha.yaml")
    assert result.exit_code == 0, result.output
    assert (project / ".kubitect" / "clusters" / LOCAL / "applied.yaml").is_file()
    assert not (fake_env / "home" / "clusters").exists(), "the global home is untouched"
    domains = sorted(k for k in fakes.objects() if k.startswith("domain/"))
    assert domains and all(k.startswith(f"domain/{LOCAL}-") for k in domains)
    assert (project / ".kubitect" / "clusters" / LOCAL / "applied.yaml").read_text() == \
        (project / "ha.yaml").read_text(), "the config is stored as the user wrote it"


def test_a_global_and_a_local_cluster_from_one_config_live_side_by_side(cli, project, fakes):
    assert cli("apply", "ha.yaml").exit_code == 0
    assert cli("apply", "-l", "ha.yaml").exit_code == 0
    rows = json.loads(cli("list", "clusters", "-o", "json").stdout)["items"]
    assert {(r["name"], r["local"]) for r in rows} == {(NAME, False), (LOCAL, True)}
    assert f"{LOCAL} (local)" in cli("list", "clusters").stdout
    assert any(k.startswith(f"domain/{NAME}-master") for k in fakes.objects())
    assert any(k.startswith(f"domain/{LOCAL}-master") for k in fakes.objects())
    again = cli("apply", "--local", "ha.yaml")
    assert again.exit_code == 0 and "No changes detected." in again.output


def test_commands_that_name_a_local_cluster_find_it_in_the_project(cli, project, fakes):
    assert cli("apply", "--local", "ha.yaml").exit_code == 0
    assert cli("export", "config", "--cluster", LOCAL).stdout == (project / "ha.yaml").read_text()
    assert cli("verify", "--cluster", LOCAL).exit_code == 0
    assert cli("plan", "--local", "ha.yaml", "--detailed-exitcode").exit_code == 0
    destroyed = cli("destroy", "--cluster", LOCAL, "-y")
    assert destroyed.exit_code == 0, destroyed.output
    assert not (project / ".kubitect" / "clusters" / LOCAL).exists()
    assert not [k for k in fakes.objects() if LOCAL in k]


def test_the_prefix_is_reserved_and_local_excludes_home(cli, project):
    cfg = project / "ha.yaml"
    cfg.write_text(cfg.read_text().replace(f"name: {NAME}", f"name: {LOCAL}"))
    refused = cli("apply", "ha.yaml")
    assert refused.exit_code == 1 and "reserved for clusters created with --local" in refused.output
    assert cli("apply", "--local", "ha.yaml").exit_code == 0, "with --local the prefix is not doubled"
    assert (project / ".kubitect" / "clusters" / LOCAL).is_dir()
    both = cli("apply", "--local", "--home", "/tmp/elsewhere", "ha.yaml")
    assert both.exit_code == 2 and "not both" in both.output
