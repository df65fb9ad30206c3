"""kubectl on the first master over the cluster's SSH access (nothing needed on the user's machine)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Protocol

from kubitect_core.sdk import NodePool, Result

ADMIN_CONF = "/etc/kubernetes/admin.conf"
# kubectl arguments that run `ceph ...` in Rook's toolbox (append the ceph arguments)
CEPH_TOOLS = ["-n", "rook-ceph", "exec", "deploy/rook-ceph-tools", "--", "ceph"]


class Kubectl(Protocol):
    async def __call__(self, args: list[str], *, stdin: str | None = None,
                       timeout: float | None = None) -> Result: ...

    async def close(self) -> None: ...


def kubectl_prefix(facts: dict[str, Any]) -> str:
    """How kubectl is called on a master of the installer that built the cluster."""
    if (facts.get("kubernetes") or {}).get("installer") == "k3s":
        return "k3s kubectl"
    return f"kubectl --kubeconfig {ADMIN_CONF}"


@dataclass
class SshKubectl:
    pool: NodePool
    address: str
    name: str
    prefix: str

    async def __call__(self, args: list[str], *, stdin: str | None = None, timeout: float | None = None) -> Result:
        remote = await self.pool.get(self.address, name=self.name)
        return await remote.run(f"{self.prefix} {shlex.join(args)}", sudo=True, check=False, input=stdin,
                                timeout=timeout)

    async def close(self) -> None:
        await self.pool.close_all()


async def connect(ctx) -> SshKubectl:
    """kubectl on the first master that has an address (as-built topology)."""
    master = next((m for m in ctx.topology.masters if m.ip), None)
    if master is None:
        raise RuntimeError("no master with a known address to run kubectl on (run the vms stage first)")
    return SshKubectl(NodePool.from_access(ctx.ssh), master.ip, master.name, kubectl_prefix(ctx.facts))
