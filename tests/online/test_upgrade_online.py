"""The real upgrade path, one minor: real k3s release binaries on lab nodes, upgraded by the k3s plugin.

Runs only where the internet is reachable (from this machine and from the lab nodes); here it
skips with the reason the installer reports. What it proves there: the plugin installs k3s
v1.33, then `upgrade` swaps each node's binary for v1.34 (downloaded, checksum verified), takes
a real `k3s etcd-snapshot save` first, drains and restarts the nodes in order, and every node
ends Ready with its kubelet at v1.34. (kubeadm's real path needs VMs: a kubelet does not run in
an nspawn container; the same orchestration is covered against doubles in the lab tier.)
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import k3s_online_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

pytestmark = [pytest.mark.online, pytest.mark.lab]

FROM, TO = "v1.33.5", "v1.34.1"


def test_k3s_upgrade_one_minor_for_real(request, tmp_path_factory):
    import sshd_lab
    from kubitect_plugins.k3s import K3sInstaller
    from test_installers import Lab, lab_raw

    from kubitect_core.config import validate_raw

    raw = lab_raw("kbt6-online", "k3s")
    raw["kubernetes"]["version"] = FROM
    loaded = k3s_online_config(raw)
    rootfs = request.getfixturevalue("rootfs")
    installer = K3sInstaller()
    with sshd_lab.lab_netns("kbt6-") as ns:
        lab = Lab(ns, tmp_path_factory.mktemp("kbt6-upgrade-online"), rootfs)
        record: dict = {}
        ctx = lab.ctx("k3s", record)
        ctx = replace(ctx, config=loaded.config)
        ctx.options.update(installer_source="upstream", ready_timeout=600)
        with sshd_lab.entered_netns(ns):
            try:
                asyncio.run(lab.boot())
                first = ctx.topology.masters[0]
                asyncio.run(installer.apply(ctx))
                raw["kubernetes"]["version"] = TO
                ctx = replace(ctx, config=validate_raw(raw).config)
                changes = asyncio.run(installer.apply(ctx))
                nodes = json.loads(asyncio.run(lab.run(first.ip, "/usr/local/bin/k3s kubectl get nodes -o json")))
                asyncio.run(installer.destroy(ctx))
            finally:
                asyncio.run(lab.down())
    versions = {i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"] for i in nodes["items"]}
    assert all(v.startswith(TO) for v in versions.values()), versions
    assert [c for c in changes if c.kind == "etcd-snapshot" and "0600" in c.detail]
    assert len([c for c in changes if c.kind == "node" and c.detail.startswith("upgraded to")]) == len(versions)
