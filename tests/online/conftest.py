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
