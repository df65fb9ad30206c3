"""Lab nodes as systemd-nspawn containers: the cached rootfs every nspawn lab test boots, and the
small cluster the load-balancer and conformance lab tests share.

Two load balancers and one master are systemd-nspawn containers (made by the nspawn provider from
the cached rootfs) on a private /24 that exists only inside a lab namespace (sshd_lab). The test
reaches them over SSH with a per-cluster key. The master runs a stand-in API server: a TEST
DOUBLE of kube-apiserver (which needs the internet), a TLS server answering GET /readyz with 200.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import sshd_lab
from lb_lab import STANDIN_API

from kubitect_core import remote
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.failover import readyz
from kubitect_core.topology import DataDisk, Node, Topology

CACHE_HOME = Path(os.environ.get("KUBITECT_TEST_CACHE", "/var/tmp/kubitect-test-cache"))


def nspawn_rootfs(*binaries: str) -> Path:
    """The cached node rootfs (built once per cache); skips the test when the lab lacks a binary.

    `binaries` are what the calling test needs beyond systemd-nspawn and nsenter.
    """
    sshd_lab.require_lab("systemd-nspawn", "nsenter", *binaries)
    from kubitect_plugins.nspawn.settings import ROOTFS_EXTRA_PACKAGES

    from kubitect_core.images.rootfs import ensure_rootfs

    return ensure_rootfs(CACHE_HOME, extra_packages=ROOTFS_EXTRA_PACKAGES)


def nspawn_cluster(cluster: str, net: str, nodes: dict, version: str) -> dict:
    """A raw config of one local host running nspawn nodes on a bridge of `net`.0/24, as the lab
    tests that drive the whole engine write it; `nodes` is the config's cluster.nodes."""
    return {
        "hosts": [{"name": "lab", "connection": {"type": "local"}, "provider": "nspawn"}],
        "cluster": {
            "name": cluster,
            "network": {"mode": "bridge", "cidr": f"{net}.0/24", "bridge": f"kb{cluster[-6:]}"},
            "nodeTemplate": {"user": "k8s", "os": {"distro": "debian12", "networkInterface": "host0"}},
            "nodes": nodes,
        },
        "kubernetes": {"version": version, "manager": "kubeadm"},
    }


def lb_config(net: str, forward_ports=()) -> SimpleNamespace:
    """The slice of a kubitect config the nspawn provider and the LB plugin read (`net` is `a.b.c`)."""
    return SimpleNamespace(
        cluster=SimpleNamespace(
            network=SimpleNamespace(cidr=f"{net}.0/24", gateway=f"{net}.1"),
            node_template=SimpleNamespace(user="k8s", os=SimpleNamespace(network_interface=None)),
            nodes=SimpleNamespace(load_balancer=SimpleNamespace(forward_ports=list(forward_ports))),
        ),
        hosts=[SimpleNamespace(name="localhost", provider="nspawn", connection=SimpleNamespace(type="local"))],
    )


def lb_topology(cluster: str, net: str, router_id: int, master_disks: tuple[DataDisk, ...] = ()) -> Topology:
    """lb-1 (.5, priority 200), lb-2 (.6, priority 100), master-1 (.10); the VIP and endpoint are .200."""
    def node(role, nid, ip, priority=None, disks=()):
        return Node(role=role, id=nid, name=f"{cluster}-{role}-{nid}", host="localhost", ip=ip, mac=None,
                    cpu=1, ram_gib=1, main_disk_gib=10, data_disks=disks, priority=priority)

    vip = f"{net}.200"
    return Topology(cluster=cluster, nodes=(node("lb", "1", f"{net}.5", 200), node("lb", "2", f"{net}.6", 100),
                                            node("master", "1", f"{net}.10", disks=master_disks)),
                    vip=vip, endpoint=vip, virtual_router_id=router_id)


def lab_context(home: Path, cluster: str, config, topology: Topology, **options) -> StageContext:
    """A StageContext for `cluster` under `home`, with the cluster's SSH key pair written (0600)."""
    cdir = home / "clusters" / cluster
    key = cdir / "ssh" / "id_ed25519"
    sshd_lab.write_keypair(key, comment=f"kubitect-{cluster}")
    access = SshAccess(user="k8s", private_key=key, public_key=cdir / "ssh" / "id_ed25519.pub",
                       known_hosts=cdir / "ssh" / "known_hosts")
    return StageContext(cluster=cluster, config=config, topology=topology, cluster_dir=cdir, home=home,
                        ssh=access, record={}, options=options)


def conformance_registry() -> SimpleNamespace:
    """The conformance modules the engine would run with keepalived-haproxy's package installed:
    its own (daemons, configs, its failover cases) and the generic suite's."""
    from kubitect_conformance.plugin import kubitect_conformance_modules as generic
    from kubitect_plugins.keepalived_haproxy import kubitect_conformance_modules as own

    return SimpleNamespace(conformance_modules=lambda: own() + generic())


async def ssh(ctx: StageContext, ip: str, cmd: str) -> str:
    """Runs `cmd` with sudo on the node at `ip` as the cluster user; its stripped stdout."""
    async with await remote.connect(ip, user="k8s", key=ctx.ssh.private_key,
                                    known_hosts=ctx.ssh.known_hosts) as node:
        return (await node.run(cmd, sudo=True, check=False, timeout=60)).stdout.strip()


async def start_standin_api(ctx: StageContext, master: Node, workdir: Path, common_name: str,
                            restart: bool = False) -> None:
    """Starts the TEST DOUBLE of kube-apiserver on the master (a systemd unit) and waits for /readyz.

    `restart`: systemd restarts it 1 s after it dies, as kubelet restarts a crashed static pod.
    """
    key, crt = workdir / "api.key", workdir / "api.crt"
    sshd_lab.run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={common_name}")
    async with await remote.connect(master.ip, user="k8s", key=ctx.ssh.private_key,
                                    known_hosts=ctx.ssh.known_hosts) as node:
        await node.put(STANDIN_API, "/opt/standin/api.py", sudo=True)
        await node.put(crt.read_bytes(), "/opt/standin/api.crt", sudo=True)
        await node.put(key.read_bytes(), "/opt/standin/api.key", mode=0o600, sudo=True)
        supervised = "-p Restart=always -p RestartSec=1 " if restart else ""
        await node.run(f"systemd-run --unit=standin-api {supervised}python3 /opt/standin/api.py "
                       f"{master.name} /opt/standin/api.crt /opt/standin/api.key 6443", sudo=True)
    for _ in range(100):
        if (await readyz(master.ip, timeout=1))[0]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the stand-in API server on the master never answered")
