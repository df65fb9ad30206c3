"""Fixtures of the online tier: the lab's node image (reused from tests/lab)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE_HOME = Path(os.environ.get("KUBITECT_TEST_CACHE", "/var/tmp/kubitect-test-cache"))


@pytest.fixture(scope="module")
def rootfs():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
    import sshd_lab

    sshd_lab.require_lab("systemd-nspawn", "nsenter")
    from kubitect_plugins.nspawn.settings import ROOTFS_EXTRA_PACKAGES

    from kubitect_core.images.rootfs import ensure_rootfs

    return ensure_rootfs(CACHE_HOME, extra_packages=ROOTFS_EXTRA_PACKAGES)


def k3s_online_config(raw: dict):
    """The validated lab config `raw`, or a skip naming why k3s's upstream downloads are not
    reachable from here (checked before anything, not even the node image, is built)."""
    from kubitect_plugins.k3s import internet_reason

    from kubitect_core.config import validate_raw
    from kubitect_core.contracts import StageContext

    loaded = validate_raw(raw)
    probe = StageContext(cluster=loaded.config.cluster.name, config=loaded.config, topology=loaded.topology,
                         cluster_dir=Path("/nonexistent"), home=Path("/nonexistent"), ssh=None, record={},
                         options={"installer_source": "upstream"})
    reason = internet_reason(probe)
    if reason:
        pytest.skip(f"online test: {reason}")
    return loaded
