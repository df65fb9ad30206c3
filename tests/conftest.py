"""Fixtures shared by every tier."""

from __future__ import annotations

import pytest


@pytest.fixture
def kubitect_home(tmp_path, monkeypatch):
    """A private kubitect home for one test: nothing touches ~/.kubitect."""
    home = tmp_path / "kubitect-home"
    home.mkdir()
    monkeypatch.setenv("KUBITECT_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def private_user_ssh_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own empty "~/.ssh" (KUBITECT_SSH_DIR), also for the kubitect processes
    it starts: nothing reads the real ~/.ssh/config or writes the real ~/.ssh/known_hosts
    (addToKnownHosts is on in the seed and most presets)."""
    path = tmp_path_factory.mktemp("user-ssh")
    path.chmod(0o700)
    monkeypatch.setenv("KUBITECT_SSH_DIR", str(path))
    return path
