"""The plugin-authoring guide's load balancer (docs/plugins.md, "A complete load balancer") works as
the guide says.

The code block is read from the guide itself, so the guide cannot drift from the contract: it
imports kubitect only through the SDK, loads without a contract problem, is selected by one word
in the config, runs inside `kubitect apply` (with the TEST DOUBLE machine and installer backends of
tests/fixtures), and refuses a config it cannot serve with its own message, not a traceback.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from kubitect_core.plugins import load_registry

MODULE = "guide_direct_endpoint"


def guide_code() -> str:
    section = (ROOT / "docs" / "plugins.md").read_text().split("## A complete load balancer", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def guide_plugin(fake_env, monkeypatch):
    site = fake_env / "site"
    site.mkdir()
    (site / f"{MODULE}.py").write_text(guide_code())
    monkeypatch.setenv("KUBITECT_PLUGINS", f"{os.environ['KUBITECT_PLUGINS']},{MODULE}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ["PYTHONPATH"]]))
    monkeypatch.syspath_prepend(str(site))
    return fake_env


def _direct_config(fake_env) -> str:
    seed = yaml.safe_load((fake_env / "ha.yaml").read_text())
    seed["cluster"]["nodes"]["loadBalancer"] = {"implementation": "direct"}
    masters = seed["cluster"]["nodes"]["master"]["instances"]
    del masters[1:]  # Kubitect's rule: several control planes need load balancer nodes
    (fake_env / "direct.yaml").write_text(yaml.safe_dump(seed))
    return str(fake_env / "direct.yaml")


def kubitect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubitect_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "400"}, timeout=120)


def test_the_guide_imports_kubitect_only_through_the_sdk():
    modules = [n.module for n in ast.walk(ast.parse(guide_code()))
               if isinstance(n, ast.ImportFrom)] + [a.name for n in ast.walk(ast.parse(guide_code()))
                                                    if isinstance(n, ast.Import) for a in n.names]
    assert modules and all(m == "kubitect_core.sdk" for m in modules if m.startswith("kubitect")), modules


def test_the_guide_load_balancer_loads_and_is_listed(guide_plugin):
    registry = load_registry()
    [info] = [p for p in registry.plugins if p.name == MODULE]
    assert info.error is None and info.provides == ["load balancer direct"]
    listed = kubitect("list", "plugins")
    assert listed.returncode == 0 and "load balancer direct" in listed.stdout, listed.stdout + listed.stderr


def test_one_word_selects_it_and_apply_records_the_first_master_as_the_endpoint(guide_plugin):
    applied = kubitect("apply", _direct_config(guide_plugin), "--auto-approve", "--output", "json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    finished = [json.loads(x) for x in applied.stdout.splitlines()
                if x.startswith("{") and json.loads(x)["event"] == "stage_finished"]
    [lb] = [e for e in finished if e["stage"] == "loadbalancers"]
    first_master = yaml.safe_load((guide_plugin / "direct.yaml").read_text())["cluster"]["nodes"]["master"][
        "instances"][0]["ip"]
    assert lb["ok"] and lb["changes"] == [{"action": "keep", "kind": "endpoint", "name": first_master,
                                           "host": None, "detail": ""}]
    record = json.loads((guide_plugin / "home" / "clusters" / "kubitect-ha" / "record.json").read_text())
    assert record["stages"]["loadbalancers"]["data"] == {"endpoint": first_master, "vip": None}
    assert [e["stage"] for e in finished if not e["ok"]] == []


def test_a_config_with_a_vip_is_refused_with_the_plugins_words(guide_plugin):
    seed = yaml.safe_load((guide_plugin / "ha.yaml").read_text())
    seed["cluster"]["nodes"]["loadBalancer"]["implementation"] = "direct"
    (guide_plugin / "vip.yaml").write_text(yaml.safe_dump(seed))
    applied = kubitect("apply", str(guide_plugin / "vip.yaml"), "--auto-approve")
    out = applied.stdout + applied.stderr
    assert applied.returncode != 0 and "'direct' serves no VIP" in " ".join(out.split()), out
    assert "Traceback" not in out
