"""The example third-party plugin, installed like a user would, runs inside `kubitect apply`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, kubitect_process, pip_install

EXAMPLE = ROOT / "examples" / "plugins" / "kubitect-hello"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-installs the example into a private target dir (the shared venv stays untouched)."""
    return pip_install(EXAMPLE, tmp_path_factory.mktemp("site"))


def test_list_plugins_shows_builtins_and_the_installed_example(installed_example, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(installed_example))
    monkeypatch.delenv("KUBITECT_DISABLE_PLUGINS", raising=False)
    out = subprocess.run([sys.executable, "-m", "kubitect_core.cli", "list", "plugins"], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "200"}).stdout
    for builtin in ("stages", "libvirt", "nspawn", "keepalived-haproxy", "conformance"):
        assert f"│ {builtin} " in out, out
    assert "│ hello " in out and "stage hello" in out and "observer" in out


def test_example_stage_runs_inside_apply_after_vms(installed_example, fake_env, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(installed_example), os.environ["PYTHONPATH"]]))
    proc = kubitect_process("apply", str(fake_env / "ha.yaml"), "--output", "json")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    import json

    started = [json.loads(x)["stage"] for x in out.splitlines()
               if x.startswith("{") and json.loads(x)["event"] == "stage_started"]
    assert started.index("hello") == started.index("vms") + 1
    cluster = fake_env / "home" / "clusters" / "kubitect-ha"
    assert (cluster / "hello" / "kubitect-ha-master-1").read_text().startswith("hello kubitect-ha-master-1")
    assert "hello apply ok" in (cluster / "hello-timings.log").read_text()
