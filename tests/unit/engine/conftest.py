"""Engine tests run the real CLI and engine with the TEST DOUBLE backends of tests/fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
SEED = ROOT / "examples" / "ha.yaml"
REAL_BACKENDS = "libvirt,nspawn,keepalived-haproxy,kubeadm,k3s,rook,conformance"


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """A private home, a fake hypervisor dir and the double plugins in place of the real backends."""
    env = {
        "KUBITECT_HOME": str(tmp_path / "home"),
        "KUBITECT_FAKE_DIR": str(tmp_path / "fake"),
        "KUBITECT_PLUGINS": "kubitect_fakes",
        "KUBITECT_DISABLE_PLUGINS": REAL_BACKENDS,
        "HOME": str(tmp_path),  # the seed's keyfile ~/.ssh/id_rsa_ha resolves here
        "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(FIXTURES))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa_ha").write_text("not a real key: the fake backends never use it\n")
    shutil.copy(SEED, tmp_path / "ha.yaml")
    return tmp_path


@pytest.fixture
def fakes(fake_env):
    import kubitect_fakes

    return kubitect_fakes


@pytest.fixture
def cli(fake_env):
    """Runs `kubitect ARGS...` in-process and returns the result (output, exit_code)."""
    from kubitect_core.cli import app

    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return run


def kubitect_process(*args: str, **kw) -> subprocess.Popen:
    """`kubitect ARGS` as a separate process (for kill and concurrency tests)."""
    return subprocess.Popen([sys.executable, "-m", "kubitect_core.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)
