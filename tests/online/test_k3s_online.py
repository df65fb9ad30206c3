"""The real k3s, installed by the k3s plugin on lab nodes: runs only where the internet is reachable.

Here (no internet) it skips with the reason the installer itself reports, which is the same
message the lab demo shows as "kubernetes stage skipped: <reason>". Where the internet exists,
the lab nodes must reach it too (the test probes from the first node and skips otherwise), and
the real k3s release binary is downloaded, started with the plugin's units and checked with
its own kubectl.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from conftest import k3s_online_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

pytestmark = [pytest.mark.online, pytest.mark.lab]


def test_k3s_for_real(request, tmp_path_factory):
    import sshd_lab
    from kubitect_plugins.k3s import K3sInstaller
    from test_installers import Lab, lab_raw

    from kubitect_core.sdk import kube as shared

    # check the internet first: nothing is built (not even the node image) when it is missing
    k3s_online_config(lab_raw("kbt6-online", "k3s"))
    rootfs = request.getfixturevalue("rootfs")
    installer = K3sInstaller()
    with sshd_lab.lab_netns("kbt6-") as ns:
        lab = Lab(ns, tmp_path_factory.mktemp("kbt6-online"), rootfs)
        record: dict = {}
        ctx = lab.ctx("k3s", record)
        ctx.options.update(installer_source="upstream", ready_timeout=600)
        with sshd_lab.entered_netns(ns):
            try:
                asyncio.run(lab.boot())
                first = ctx.topology.masters[0]
                node_reason = asyncio.run(_node_probe(lab, first.ip))
                if node_reason:
                    pytest.skip(f"online test: the lab nodes have no internet: {node_reason}")
                changes = asyncio.run(installer.apply(ctx))
                nodes = json.loads(asyncio.run(lab.run(first.ip, "/usr/local/bin/k3s kubectl get nodes -o json")))
                # scale in and out for real: the last worker cordoned, drained by the real kubectl,
                # its agent stopped and its Node deleted; then the next apply joins it again
                leaving = ctx.topology.workers[-1]
                removed = asyncio.run(installer.remove_nodes(ctx, [leaving], False))
                after_in = json.loads(asyncio.run(lab.run(first.ip, "/usr/local/bin/k3s kubectl get nodes -o json")))
                asyncio.run(installer.apply(ctx))
                after_out = json.loads(asyncio.run(lab.run(first.ip, "/usr/local/bin/k3s kubectl get nodes -o json")))
                asyncio.run(installer.destroy(ctx))
            finally:
                asyncio.run(lab.down())
    ready = shared.ready_nodes(json.dumps(nodes))
    assert set(ready) == {n.name for n in (*ctx.topology.masters, *ctx.topology.workers)}
    assert all(v["ready"] == "True" for v in ready.values())
    assert any(c.kind == "node" and c.action == "change" for c in changes)
    assert [(c.action, c.name) for c in removed] == [("delete", leaving.name)]
    assert leaving.name not in shared.ready_nodes(json.dumps(after_in))
    assert shared.ready_nodes(json.dumps(after_out)).get(leaving.name, {}).get("ready") == "True"


async def _node_probe(lab, ip: str) -> str | None:
    from kubitect_plugins.k3s.args import binary_url, k3s_version

    from kubitect_core import remote
    from kubitect_core.sdk import kube as shared

    async with await remote.connect(ip, user="k8s", key=lab.ssh.private_key, known_hosts=lab.ssh.known_hosts) as r:
        return await shared.node_unreachable_reason(r, [binary_url(k3s_version("v1.34.2"))])
