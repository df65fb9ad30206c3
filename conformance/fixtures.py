"""pytest fixtures and options shared by every conformance module (built-in or a plugin's).

The verify stage runs pytest with this module as a plugin (`-p kubitect_conformance.fixtures`);
`pytest conformance/ --cluster NAME` loads it through conformance/conftest.py. Either way the
modules read one inventory file the verify stage writes: nodes, endpoint, VIP, SSH access.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubitect_core.paths import cluster_dir, kubitect_home


def pytest_addoption(parser):
    group = parser.getgroup("kubitect")
    group.addoption("--cluster", help="name of the kubitect cluster to check")
    group.addoption("--kubitect-home", help="kubitect home (default: $KUBITECT_HOME or ~/.kubitect)")
    group.addoption("--kubitect-cluster-dir", help="the cluster directory (instead of --cluster)")


@pytest.fixture(scope="session")
def kubitect_cluster_dir(pytestconfig) -> Path:
    explicit = pytestconfig.getoption("--kubitect-cluster-dir")
    if explicit:
        return Path(explicit)
    name = pytestconfig.getoption("--cluster")
    if not name:
        pytest.exit("conformance needs --cluster NAME (or --kubitect-cluster-dir DIR)", returncode=4)
    return cluster_dir(kubitect_home(pytestconfig.getoption("--kubitect-home")), name)


@pytest.fixture(scope="session")
def kubitect_inventory(kubitect_cluster_dir) -> dict:
    path = kubitect_cluster_dir / "conformance" / "inventory.json"
    if not path.exists():
        pytest.exit(f"{path} does not exist: run `kubitect verify --cluster NAME` or `kubitect apply` first",
                    returncode=4)
    return json.loads(path.read_text())
