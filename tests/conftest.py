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
