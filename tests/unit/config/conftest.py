"""Fixtures for the config tests: the seed config as data and a way to load edited copies."""

from __future__ import annotations

import copy

import pytest
import yaml
from cfgedit import SEED

from kubitect_core.config import load_config


@pytest.fixture(scope="session")
def seed_raw() -> dict:
    return yaml.safe_load(SEED.read_text())


@pytest.fixture
def seed(seed_raw) -> dict:
    """A fresh, editable copy of the seed config."""
    return copy.deepcopy(seed_raw)


@pytest.fixture
def load_text(tmp_path):
    """Writes YAML text to a file and loads it (ConfigError propagates)."""

    def _load(text: str, **kwargs):
        path = tmp_path / "cluster.yaml"
        path.write_text(text)
        return load_config(path, **kwargs)

    return _load


@pytest.fixture
def load_data(load_text):
    """Dumps data to YAML (key order kept) and loads it; returns (text, loaded)."""

    def _load(data, **kwargs):
        text = yaml.safe_dump(data, sort_keys=False)
        return load_text(text, **kwargs)

    return _load
