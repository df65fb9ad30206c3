"""`kubitect lab ...` as a user runs it, and the root-namespace guard plugin for pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sshd_lab import HARNESS_MARKS, harness_prefix

from kubitect_core.lab import Lab, netns, procs

pytestmark = HARNESS_MARKS

KUBITECT = [str(Path(sys.executable).with_name("kubitect"))]


@pytest.fixture
def prefix():
    """A prefix no other test run uses; everything with it is removed afterwards."""
    with harness_prefix() as p:
        yield p


def kubitect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBITECT, *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


def test_lab_cli_up_exec_status_down(prefix):
    up = kubitect("lab", "up", "cli", "--prefix", prefix)
    assert up.returncode == 0, up.stdout + up.stderr
    ns = prefix + "cli"
    assert f"lab {ns} up" in up.stdout and netns.exists(ns)
    out = kubitect("lab", "exec", "cli", "--prefix", prefix, "--",
                   "sh", "-c", "echo $KUBITECT_LAB; ip -o link | wc -l; exit 5")
    assert out.returncode == 5
    assert out.stdout.split() == [ns, "1"]
    bg = kubitect("lab", "exec", "cli", "--prefix", prefix, "--",
                  "sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!")
    daemon = int(bg.stdout.strip())
    status = kubitect("lab", "status", "--prefix", prefix)
    assert ns in status.stdout and "yes" in status.stdout
    down = kubitect("lab", "down", "cli", "--prefix", prefix)
    assert down.returncode == 0 and "1 processes stopped" in down.stdout
    assert not procs.alive(daemon) and not netns.exists(ns)
    again = kubitect("lab", "down", "cli", "--prefix", prefix)
    assert again.returncode == 0 and "0 processes stopped" in again.stdout
    assert "no kbt2-" in kubitect("lab", "status", "--prefix", prefix).stdout


def test_lab_cli_refuses_unknown_lab_and_ambiguous_down(prefix):
    missing = kubitect("lab", "exec", "nope", "--prefix", prefix, "--", "true")
    assert missing.returncode == 1 and "kubitect lab up nope" in missing.stdout
    both = kubitect("lab", "down", "x", "--all", "--prefix", prefix)
    assert both.returncode == 2 and "name one lab, or pass --all" in both.stdout


_GUARDED = """
import subprocess
def test_changes_the_watched_namespace():
    subprocess.run(["ip", "-n", "{ns}", "link", "add", "kbt2dummy", "type", "veth",
                    "peer", "name", "kbt2peer"], check=True)
"""


def test_guard_plugin_fails_a_session_that_changed_the_watched_namespace(prefix, tmp_path):
    """The pytest guard (pointed at a lab namespace, since the root one must never change)."""
    with Lab("guard", prefix=prefix) as lab:
        test_file = tmp_path / "test_guarded.py"
        test_file.write_text(textwrap.dedent(_GUARDED.format(ns=lab.netns)))
        env = {**os.environ, "KUBITECT_NETNS_GUARD_PATH": f"/run/netns/{lab.netns}"}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "kubitect_core.lab.pytest_rootns",
             "-p", "no:cacheprovider", str(test_file)],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )
        assert run.returncode == 1, run.stdout
        assert "1 passed" in run.stdout and "CHANGED" in run.stdout and "kbt2dummy" in run.stdout
        lab.run(["ip", "link", "del", "kbt2dummy"], check=True)
        clean = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "kubitect_core.lab.pytest_rootns",
             "-p", "no:cacheprovider", "-k", "nothing", str(test_file)],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )
        assert "unchanged" in clean.stdout, clean.stdout
