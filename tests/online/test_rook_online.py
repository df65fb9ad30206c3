"""The real Rook path: runs only where the internet is reachable (skipped here with the reason).

1. The pinned manifests of the default release are downloaded from the release tag and match
   their pinned sha256 (what the unit tests' stand-ins cannot show).
2. With KUBITECT_ROOK_ONLINE_CONFIG naming a config with `addons.rook.enabled: true` on hosts
   that can run it (real VMs, images pulled from the internet): `kubitect apply` installs Rook and
   waits for HEALTH_OK, and `kubitect verify` passes the Rook checks (every data disk an up/in
   OSD, HEALTH_OK, a PVC binds and mounts); then `kubitect destroy`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kubitect_plugins.rook.manifests import download, upstream
from kubitect_plugins.rook.release import release_for

pytestmark = pytest.mark.online


def _reachable(url: str) -> str | None:
    try:
        download(url, timeout=10)
    except OSError as exc:
        return f"online test: cannot download {url}: {exc}"
    return None


def test_pinned_manifests_download_and_match_their_checksums(tmp_path):
    release = release_for(None)
    reason = _reachable(release.url("common.yaml"))
    if reason:
        pytest.skip(reason)
    texts = upstream(release, tmp_path, download)  # raises on any checksum mismatch
    assert set(texts) == {name for name, _ in release.files}
    assert release.operator_image in texts["operator.yaml"]
    assert release.ceph_image in texts["toolbox.yaml"]
    assert upstream(release, tmp_path, lambda url: b"") == texts  # the verified cache is used again


def test_rook_on_a_real_cluster(tmp_path):
    config = os.environ.get("KUBITECT_ROOK_ONLINE_CONFIG")
    if not config:
        pytest.skip("online test: set KUBITECT_ROOK_ONLINE_CONFIG to a config with addons.rook.enabled on hosts "
                    "that can run it (real VMs with internet access)")
    reason = _reachable(release_for(None).url("common.yaml"))
    if reason:
        pytest.skip(reason)
    kubitect = [sys.executable, "-m", "kubitect_core.cli"]
    home = ["--home", str(tmp_path / "home")]
    name = None
    try:
        applied = subprocess.run([*kubitect, "apply", *home, "--auto-approve", config], capture_output=True, text=True,
                                 timeout=7200)
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        name = next(p.name for p in (tmp_path / "home" / "clusters").iterdir())
        report = json.loads((tmp_path / "home" / "clusters" / name / "reports" / "conformance.json").read_text())
        outcomes = {c["name"]: c["outcome"] for c in report["cases"] if "check_rook" in (c["module"] or "")}
        assert outcomes and set(outcomes.values()) == {"passed"}, outcomes
    finally:
        if name:
            subprocess.run([*kubitect, "destroy", *home, "--auto-approve", "--cluster", name], timeout=3600)
