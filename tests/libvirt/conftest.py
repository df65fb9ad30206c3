"""Fixtures of the libvirt tier (helpers and the test-driver host files: `libvirt_helpers`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from kubitect_plugins.libvirt.provider import LibvirtProvider  # noqa: E402
from libvirt_helpers import HOST_BR0, Cluster  # noqa: E402

from kubitect_core.config import load_config  # noqa: E402


@pytest.fixture
def make_cluster(tmp_path):
    """Builds a `Cluster` from a config file; closes its provider's connections afterwards."""
    made: list[LibvirtProvider] = []

    def _make(config_path: Path, host_uri: str = HOST_BR0) -> Cluster:
        loaded = load_config(config_path)
        provider = LibvirtProvider()
        made.append(provider)
        uris = {h.name: host_uri for h in loaded.config.hosts}
        return Cluster(loaded, tmp_path, provider, uris)

    yield _make
    for p in made:
        p.close()
