"""The example third-party load balancer (examples/plugins/kubitect-first-master), installed like a
user would: listed next to both built-in load balancers, selected by one word in the config,
validated by its own rules, and run by `kubitect apply` (the other backends are the test doubles).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, kubitect_process, pip_install

EXAMPLE = ROOT / "examples" / "plugins" / "kubitect-first-master"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-installs the example into a private target dir (the shared venv stays untouched)."""
    target = pip_install(EXAMPLE, tmp_path_factory.mktemp("site"))
    assert (target / "kubitect_first_master" / "conformance_first_master.py").is_file()
    return target


def _kubitect(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250", **env}, timeout=120)


def test_list_plugins_shows_both_builtin_load_balancers_and_the_example(installed_example, monkeypatch):
    monkeypatch.delenv("KUBITECT_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("KUBITECT_PLUGINS", raising=False)
    out = _kubitect("list", "plugins", env={"PYTHONPATH": str(installed_example)}).stdout
    for lb in ("load balancer keepalived-haproxy (default)", "load balancer control-plane-vip",
               "load balancer first-master"):
        assert lb in out, out
    assert "│ first-master " in out and "conformance conformance_first_master" in out, out


def _config(fake_env, **lb) -> str:
    raw = yaml.safe_load((fake_env / "ha.yaml").read_text())
    section = raw["cluster"]["nodes"]["loadBalancer"]
    section.pop("instances"), section.pop("vip")
    section.update(lb)
    path = fake_env / "first-master.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_one_word_selects_it_and_apply_records_the_first_master(installed_example, fake_env, monkeypatch):
    env = {"PYTHONPATH": os.pathsep.join([str(installed_example), os.environ["PYTHONPATH"]])}
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    config = _config(fake_env, implementation="first-master")
    proc = kubitect_process("apply", config, "--output", "json")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    record = json.loads((fake_env / "home" / "clusters" / "kubitect-ha" / "record.json").read_text())
    lb = record["stages"]["loadbalancers"]["data"]
    master = yaml.safe_load((fake_env / "ha.yaml").read_text())["cluster"]["nodes"]["master"]["instances"][0]
    assert (lb["implementation"], lb["endpoint"], lb["port"], lb["vip"]) == ("first-master", master["ip"], 6443, None)
    # its own rules: a VIP means nothing to it, load balancer machines would serve nothing
    bad = _config(fake_env, implementation="first-master", vip="10.10.13.200")
    res = _kubitect("validate", bad, env=env)
    assert res.returncode != 0 and "uses no virtual IP" in res.stdout + res.stderr, res.stdout + res.stderr
    raw = yaml.safe_load((fake_env / "ha.yaml").read_text())
    raw["cluster"]["nodes"]["loadBalancer"]["implementation"] = "first-master"
    (fake_env / "with-lbs.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    res = _kubitect("validate", str(fake_env / "with-lbs.yaml"), env=env)
    assert res.returncode != 0 and "machines that serve nothing" in res.stdout + res.stderr, res.stdout
