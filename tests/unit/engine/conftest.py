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


def pip_install(project: Path, target: Path) -> Path:
    """pip-installs an example plugin project into a private target dir, as a user would (the shared
    venv stays untouched); fails the test with pip's message when it cannot."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--target", str(target), str(project)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"pip install of {project.name} failed:\n{proc.stderr}")
    return target


def kubitect_process(*args: str, **kw) -> subprocess.Popen:
    """`kubitect ARGS` as a separate process (for kill and concurrency tests)."""
    return subprocess.Popen([sys.executable, "-m", "kubitect_core.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)
