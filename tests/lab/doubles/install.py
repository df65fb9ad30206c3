"""Puts the kube TEST DOUBLE (kube_double.py) on lab nodes under the names of the real tools.

For lab tests and the lab demo: after the vms stage booted nspawn nodes, call
`await install_doubles(ssh, nodes, "v1.34.2")` (k3s: "v1.34.2+k3s1") and run the kubernetes
stage with `installer_source=preinstalled`. The masters then serve /readyz over TLS on 6443, so
the loadbalancers stage and the VIP checks of verify pass through the VIP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from kubitect_core import remote
from kubitect_core.contracts import SshAccess
from kubitect_core.topology import Node

DOUBLE = Path(__file__).with_name("kube_double.py")
LIB = "/usr/local/lib/kubitect-doubles/kube_double.py"
TOOLS = {"kubeadm": "bin", "kubelet": "bin", "kubectl": "bin", "k3s": "bin", "containerd": "bin",
         "modprobe": "sbin", "sysctl": "sbin"}  # /usr/local/{bin,sbin} come first in PATH and secure_path
CALL_LOG = "/var/log/kubitect-doubles/calls.jsonl"
# The kubelet as a service (upgrade tests): on every (re)start it reports its binary's version to the
# API, as a real kubelet does, so a restart after a binary swap shows the new version in `get nodes`.
KUBELET_UNIT = ("[Unit]\nDescription=kubelet TEST DOUBLE (kubitect lab)\n\n[Service]\nType=simple\n"
                "ExecStart=/usr/local/bin/kubelet --kubitect-double-run\n")


async def install_on(ssh: SshAccess, node: Node, version: str, kubelet_service: bool = False) -> None:
    """One node: the script, the symlinks, the version it reports; the call log starts empty."""
    async with await remote.connect(node.ip, user=ssh.user, key=ssh.private_key, known_hosts=ssh.known_hosts,
                                    name=node.name) as r:
        await r.put(DOUBLE.read_bytes(), LIB, mode=0o755, sudo=True)
        await r.put(version + "\n", "/etc/kubitect-doubles/version", sudo=True)
        links = " && ".join(f"ln -sf {LIB} /usr/local/{where}/{tool}" for tool, where in TOOLS.items())
        await r.run(f"{links} && rm -f {CALL_LOG}", sudo=True)
        if kubelet_service:
            await r.put(KUBELET_UNIT, "/etc/systemd/system/kubelet.service", sudo=True)
            await r.run("systemctl daemon-reload", sudo=True)


async def stage_version(ssh: SshAccess, nodes: Iterable[Node], version: str) -> None:
    """Stands in for installing new packages/binaries: every node's tools now report `version`
    (what is RUNNING changes only when the installer restarts it)."""
    async def one(node: Node) -> None:
        async with await remote.connect(node.ip, user=ssh.user, key=ssh.private_key, known_hosts=ssh.known_hosts,
                                        name=node.name) as r:
            await r.put(version + "\n", "/etc/kubitect-doubles/version", sudo=True)
    await asyncio.gather(*(one(n) for n in nodes))


async def install_doubles(ssh: SshAccess, nodes: Iterable[Node], version: str, *,
                          kubelet_service: bool = False) -> None:
    """Every node at once (a handful of small SSH commands each)."""
    await asyncio.gather(*(install_on(ssh, n, version, kubelet_service) for n in nodes))
