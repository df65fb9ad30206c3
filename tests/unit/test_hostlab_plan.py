"""Unit tier: what `kubitect lab up NAME --config FILE` makes of a config, before anything is built.

Starts from the seed's own file (examples/ha.yaml) and variants a user would write; the plan is
pure (no namespace is made), so refusals are checked here and, through the CLI, shown to leave
nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kubitect_core.cli import app, lab_cmds
from kubitect_core.lab import hostlab
from kubitect_core.lab.harness import load_lab_config

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "ha.yaml"


def _plan(path: Path, ns: str = "kbtu-seed") -> hostlab.LabPlan:
    cfg, topo = load_lab_config(path)
    return hostlab.plan(cfg, topo, ns, str(path))


def _variant(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(SEED.read_text())
    edit(data)
    out = tmp_path / "variant.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_the_seed_plans_five_hosts_on_its_segment_with_a_free_workstation_address():
    plan = _plan(SEED)
    assert [(h.name, h.address, h.user, h.bridge) for h in plan.hosts] == [
        ("host1", "10.10.0.5", "kubitect", "br0"), ("host2", "10.10.0.6", "kubitect", "br0"),
        ("host3", "10.10.0.10", "kubitect", "br0"), ("host4", "10.10.0.11", "kubitect", "br0"),
        ("host5", "10.10.0.12", "kubitect", "br0")]
    assert (plan.cidr, plan.gateway) == ("10.10.0.0/20", "10.10.0.1")
    taken = {"10.10.0.1", "10.10.13.200", *(h.address for h in plan.hosts),
             "10.10.13.201", "10.10.13.202", "10.10.13.10", "10.10.13.11", "10.10.13.12",
             "10.10.13.20", "10.10.13.21", "10.10.13.22"}
    assert plan.workstation_ip not in taken
    assert all(h.key_path == f"{plan.home}/.ssh/id_rsa_ha" for h in plan.hosts)  # ~ is the lab's home
    assert [h.name for h in plan.hosts if h.pool_dirs] == ["host3", "host4", "host5"]
    assert plan.distro == "ubuntu22" and plan.image_url and "ubuntu" in plan.image_url


def test_a_host_without_keyfile_gets_kubitects_default_key_in_the_lab_home(tmp_path):
    def drop_keyfile(d):
        for h in d["hosts"]:
            del h["connection"]["ssh"]
    plan = _plan(_variant(tmp_path, drop_keyfile))
    assert {h.key_path for h in plan.hosts} == {f"{plan.home}/.ssh/id_rsa"}


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["hosts"][0]["connection"].update(type="local"), "hosts[host1].connection.type: a multi-host lab"),
    (lambda d: d["hosts"][1]["connection"].update(ip="192.168.7.6"), "address 192.168.7.6 is not in the segment"),
    (lambda d: d["hosts"][2]["connection"]["ssh"].update(keyfile="/root/.ssh/id_rsa"), "outside the lab's home"),
], ids=["local-host", "host-outside-cidr", "real-keyfile"])
def test_a_config_the_lab_cannot_simulate_is_refused_naming_host_and_field(tmp_path, edit, message):
    with pytest.raises(hostlab.LabConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _plan(_variant(tmp_path, edit))


def test_lab_up_refuses_a_bad_config_with_its_line_and_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(lab_cmds, "_need_root", lambda: None)
    built = []
    monkeypatch.setattr("kubitect_core.lab.harness.lab_down", lambda *a, **k: built.append(("down", a)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("ip: 10.10.0.6", "ip: 10.10.0.600"))
    out = CliRunner().invoke(app, ["lab", "up", "kbtu-x", "--prefix", "kbtu-", "--config", str(bad)])
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), start=1) if "10.10.0.600" in t)
    assert out.exit_code == 1 and f"{bad}:{line}" in out.output and "hosts[1].connection.ip" in out.output
    local = _variant(tmp_path, lambda d: d["hosts"][0]["connection"].update(type="local"))
    out = CliRunner().invoke(app, ["lab", "up", "kbtu-x", "--prefix", "kbtu-", "--config", str(local)])
    assert out.exit_code == 1 and "a multi-host lab simulates remote hosts" in out.output
    assert "Traceback" not in out.output and built == []
