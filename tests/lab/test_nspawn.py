"""The nspawn VM provider for real: systemd-nspawn nodes on a bridge inside a lab namespace.

The test thread enters a private network namespace (sshd_lab.entered_netns) and runs the
provider there, exactly as `kubitect lab exec` would: the bridge, the veths and all SSH traffic
stay in that namespace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import nodes_lab
import pytest
import sshd_lab
from kubitect_plugins.nspawn import NspawnProvider, kubitect_vm_providers
from kubitect_plugins.nspawn.host import NspawnError, bridge_name, cluster_id, find_nodes
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core import remote
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.topology import DataDisk, Node, Topology, as_built, recorded_nodes

pytestmark = pytest.mark.lab

NET = "10.88.0"


def _config(hosts_type: str = "local"):
    return SimpleNamespace(
        cluster=SimpleNamespace(
            network=SimpleNamespace(cidr=f"{NET}.0/24", gateway=f"{NET}.1"),
            node_template=SimpleNamespace(user="k8s"),
        ),
        hosts=[SimpleNamespace(name="localhost", connection=SimpleNamespace(type=hosts_type))],
    )


def _topology(cluster: str) -> Topology:
    def node(role, nid, ip, disks=()):
        return Node(role=role, id=nid, name=f"{cluster}-{role}-{nid}", host="localhost", ip=ip, mac=None,
                    cpu=1, ram_gib=1, main_disk_gib=10, data_disks=disks)

    return Topology(
        cluster=cluster,
        nodes=(node("lb", "1", f"{NET}.5"), node("lb", "2", f"{NET}.6"),
               node("master", "1", f"{NET}.10", (DataDisk("data", "main", 2),))),
        vip=None, endpoint=f"{NET}.10", virtual_router_id=None,
    )


def _context(tmp_path: Path, cluster: str, rootfs: Path | None = None, hosts_type: str = "local"):
    home = tmp_path / "home"
    cdir = home / "clusters" / cluster
    ssh = cdir / "ssh"
    sshd_lab.write_keypair(ssh / "id_ed25519", comment=f"kubitect-{cluster}")
    access = SshAccess(user="k8s", private_key=ssh / "id_ed25519", public_key=ssh / "id_ed25519.pub",
                       known_hosts=ssh / "known_hosts")
    return StageContext(cluster=cluster, config=_config(hosts_type), topology=_topology(cluster),
                        cluster_dir=cdir, home=home, ssh=access, record={},
                        options={"nspawn_rootfs": str(rootfs)} if rootfs else {})


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs()


class Layers:
    """One record per stage, like the engine keeps them."""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx
        self.records = {"network": {}, "storage": {}, "vms": {}}
        self.provider = NspawnProvider()

    def ctx_for(self, layer: str) -> StageContext:
        return replace(self.ctx, record=self.records[layer])

    async def apply(self, *layers: str) -> dict[str, list]:
        return {la: await getattr(self.provider, la).apply(self.ctx_for(la), ["localhost"]) for la in layers}

    async def destroy(self) -> dict[str, list]:
        return {la: await getattr(self.provider, la).destroy(self.ctx_for(la), ["localhost"])
                for la in ("vms", "storage", "network")}


async def _probe(ctx: StageContext, ip: str) -> dict[str, str]:
    async with await remote.connect(ip, user="k8s", key=ctx.ssh.private_key,
                                    known_hosts=ctx.ssh.known_hosts) as node:
        out = {}
        for key, cmd in {
            "hostname": "hostname", "whoami": "id -un", "addr": "ip -4 -o addr show dev host0",
            "route": "ip route show default", "sudo": "sudo -n id -u",
            "disk": "stat -c %s /var/lib/kubitect/disks/data.img 2>/dev/null || echo none",
            "ping_lb1": f"ping -c1 -W2 {NET}.5 >/dev/null && echo ok",
            "boot": "systemctl is-system-running --wait || true",
        }.items():
            out[key] = (await node.run(cmd, timeout=60)).stdout.strip()
        return out


def test_three_nodes_up_keep_restart_and_destroy(tmp_path, rootfs, monkeypatch):
    with sshd_lab.lab_netns("kbt3-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)  # every process we start is swept with the namespace
        cluster = f"kbt3-{ns[-6:]}"
        ctx = _context(tmp_path, cluster, rootfs)
        layers = Layers(ctx)
        cid = cluster_id(ctx.cluster_dir)

        async def scenario():
            planned = {la: await getattr(layers.provider, la).plan(layers.ctx_for(la), ["localhost"])
                       for la in ("network", "storage", "vms")}
            touched = (ctx.cluster_dir / "nspawn").exists() or sshd_lab.run(
                "ip", "link", "show", bridge_name(ctx.cluster_dir), check=False).returncode == 0
            assert {c.action for la in planned.values() for c in la} == {"create"} and not touched
            first = await layers.apply("network", "storage")
            started = time.monotonic()
            vms = await layers.apply("vms")
            up_seconds = time.monotonic() - started
            print(f"\n3 nspawn nodes up and answering SSH in {up_seconds:.2f}s")
            probes = {n.name: await _probe(ctx, n.ip) for n in ctx.topology.nodes}
            print(f"probes done at {time.monotonic() - started:.2f}s")
            recorded = {k: dict(v) for k, v in layers.records["vms"]["nodes"].items()}
            # read-only look at the machine's root namespace: none of this is there
            root_links = sshd_lab.run("nsenter", "--net=/proc/2/ns/net", "ip", "-o", "link").stdout
            assert bridge_name(ctx.cluster_dir) not in root_links and "vb-" not in root_links
            again = await layers.apply("network", "storage", "vms")
            plan = await layers.provider.vms.plan(layers.ctx_for("vms"), ["localhost"])
            # a dead container is restarted, keeping its host key (no HostKeyChanged)
            os.kill(layers.records["vms"]["nodes"][victim.name]["pid"], signal.SIGKILL)
            for _ in range(50):
                if victim.name not in find_nodes(cid):
                    break
                await asyncio.sleep(0.1)
            replan = await layers.provider.vms.plan(layers.ctx_for("vms"), ["localhost"])
            healed = await layers.apply("vms")
            print(f"healed at {time.monotonic() - started:.2f}s")
            after = await _probe(ctx, victim.ip)
            return first, vms, up_seconds, probes, recorded, again, plan, replan, healed, after

        victim = ctx.topology.nodes[1]
        with entered_netns(ns):
            try:
                (first, vms, up_seconds, probes, recorded, again, plan, replan, healed,
                 after) = asyncio.run(scenario())
                gone = asyncio.run(layers.destroy())
                bridge_left = sshd_lab.run("ip", "link", "show", bridge_name(ctx.cluster_dir), check=False)
                links = sshd_lab.run("ip", "-o", "link").stdout
            finally:
                asyncio.run(layers.destroy())

        assert [c.action for c in first["network"]] == ["create"]
        assert sorted(c.action for c in vms["vms"]) == ["create"] * 3
        for node in ctx.topology.nodes:
            p = probes[node.name]
            assert p["hostname"] == node.name
            assert p["whoami"] == "k8s" and p["sudo"] == "0"
            assert f"inet {node.ip}/24" in p["addr"]
            assert p["route"].startswith(f"default via {NET}.1")
            assert p["ping_lb1"] == "ok"
            assert p["boot"] in ("running", "degraded")
            rec = recorded[node.name]
            assert (rec["name"], rec["host"], rec["ip"], rec["domain"]) == (node.name, "localhost", node.ip, node.name)
            assert rec["pid"] > 0 and len(rec["mac"].split(":")) == 6
        # what later stages get: the as-built topology from this record (the containers' real MACs)
        built = as_built(ctx.topology, recorded_nodes({"nspawn": {"nodes": recorded}}))
        assert [(n.name, n.ip, n.domain, n.mac) for n in built.nodes] == \
            [(n.name, n.ip, n.name, recorded[n.name]["mac"]) for n in ctx.topology.nodes]
        assert recorded[f"{cluster}-master-1"]["volumes"]["data"].endswith("/disks/data.img")
        assert probes[f"{cluster}-master-1"]["disk"] == str(2 * 1024**3)
        assert probes[f"{cluster}-lb-1"]["disk"] == "none"
        assert {c.action for la in again.values() for c in la} == {"keep"}
        assert {c.action for c in plan} == {"keep"}
        assert {(c.name, c.action) for c in replan if c.action != "keep"} == {(victim.name, "change")}
        assert {(c.name, c.action) for c in healed["vms"] if c.action != "keep"} == {(victim.name, "change")}
        assert after["hostname"] == victim.name
        assert sorted(c.name for c in gone["vms"]) == sorted(n.name for n in ctx.topology.nodes)
        assert [c.kind for c in gone["network"]] == ["bridge"]
        assert find_nodes(cid) == {}
        assert not (ctx.cluster_dir / "nspawn").exists()
        assert bridge_left.returncode != 0
        assert "vb-" not in links
        assert up_seconds < 60


def test_destroy_finds_containers_without_a_record(tmp_path, rootfs, monkeypatch):
    with sshd_lab.lab_netns("kbt3-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        ctx = _context(tmp_path, f"kbt3-{ns[-6:]}", rootfs)
        ctx = replace(ctx, topology=replace(ctx.topology, nodes=ctx.topology.nodes[:1]))
        layers = Layers(ctx)
        cid = cluster_id(ctx.cluster_dir)
        with entered_netns(ns):
            try:
                asyncio.run(layers.apply("network", "storage", "vms"))
                running = find_nodes(cid)
                lost = Layers(ctx)  # a fresh run: every record lost
                kept = asyncio.run(lost.apply("network", "storage", "vms"))
                rebuilt = dict(lost.records["vms"]["nodes"][ctx.topology.nodes[0].name])
                gone = asyncio.run(lost.destroy())
                bridge_left = sshd_lab.run("ip", "link", "show", bridge_name(ctx.cluster_dir), check=False)
            finally:
                asyncio.run(layers.destroy())
        assert list(running) == [ctx.topology.nodes[0].name]
        assert [c.action for c in kept["vms"]] == ["keep"]  # found by marker, spec unchanged
        assert rebuilt["pid"] == running[ctx.topology.nodes[0].name] and rebuilt["mac"].count(":") == 5
        assert [c.name for c in gone["vms"]] == [ctx.topology.nodes[0].name]
        assert find_nodes(cid) == {}
        assert bridge_left.returncode != 0 and not (ctx.cluster_dir / "nspawn").exists()


def test_refuses_the_root_network_namespace(tmp_path, monkeypatch):
    if sshd_lab.current_netns_inode() != sshd_lab.root_netns_inode():
        pytest.skip("this test process does not run in the root network namespace")
    monkeypatch.delenv("KUBITECT_ALLOW_ROOT_NETNS", raising=False)
    ctx = _context(tmp_path, "kbt3-root")
    provider = kubitect_vm_providers()["nspawn"]
    for layer in ("network", "vms"):
        with pytest.raises(NspawnError, match="kubitect lab exec"):
            asyncio.run(getattr(provider, layer).apply(ctx, ["localhost"]))
    problems = asyncio.run(provider.preflight(ctx, ["localhost"]))
    assert any("KUBITECT_ALLOW_ROOT_NETNS=1" in p for p in problems)


def test_refuses_remote_hosts(tmp_path):
    ctx = _context(tmp_path, "kbt3-remote", hosts_type="remote")
    with pytest.raises(NspawnError, match="local machine only"):
        asyncio.run(NspawnProvider().network.apply(ctx, ["localhost"]))


_UNDER_IP_NETNS_EXEC = """
import asyncio, sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_nspawn import Layers, _context
from kubitect_core import remote
ctx = _context(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
ctx = replace(ctx, topology=replace(ctx.topology, nodes=ctx.topology.nodes[:1]))
layers = Layers(ctx)
async def main():
    try:
        problems = await layers.provider.preflight(ctx, ["localhost"])
        await layers.apply("network", "storage", "vms")
        async with await remote.connect(ctx.topology.nodes[0].ip, user="k8s", key=ctx.ssh.private_key,
                                        known_hosts=ctx.ssh.known_hosts) as node:
            print("PROBLEMS", problems, "HOST", (await node.run("hostname")).stdout.strip())
    finally:
        await layers.destroy()
asyncio.run(main())
"""


def test_works_under_ip_netns_exec(tmp_path, rootfs, monkeypatch):
    """`kubitect lab exec` runs kubitect under `ip netns exec`, whose fresh /sys hides the cgroup
    tree systemd-nspawn needs; the provider must still boot nodes there."""
    import subprocess
    import sys

    with sshd_lab.lab_netns("kbt3-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt3-{ns[-6:]}"
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _UNDER_IP_NETNS_EXEC,
             str(Path(__file__).parent), str(tmp_path), cluster, str(rootfs)],
            capture_output=True, text=True, timeout=120,
        )
        cdir = tmp_path / "home" / "clusters" / cluster
        leftovers = find_nodes(cluster_id(cdir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"PROBLEMS [] HOST {cluster}-lb-1" in proc.stdout
    assert leftovers == {}


def test_registered_through_the_kubitect_entry_point_group():
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="kubitect") if ep.name == "nspawn"]
    providers = ep.load().kubitect_vm_providers()
    assert list(providers) == ["nspawn"]
    assert providers["nspawn"].name == "nspawn"


def test_changed_node_restarts_and_removed_node_goes(tmp_path, rootfs, monkeypatch):
    with sshd_lab.lab_netns("kbt3-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        ctx = _context(tmp_path, f"kbt3-{ns[-6:]}", rootfs)
        lb1, lb2 = ctx.topology.nodes[:2]
        layers = Layers(replace(ctx, topology=replace(ctx.topology, nodes=(lb1, lb2))))
        cid = cluster_id(ctx.cluster_dir)
        grown = replace(lb1, data_disks=(DataDisk("data", "main", 1),))

        async def scenario():
            await layers.apply("network", "storage", "vms")
            layers.ctx = replace(layers.ctx, topology=replace(ctx.topology, nodes=(grown,)))
            planned = await layers.provider.vms.plan(layers.ctx_for("vms"), ["localhost"])
            pinned_before = remote.pinned_keys(ctx.ssh.known_hosts, lb2.ip)
            changed = await layers.apply("storage", "vms")
            pins = {n.name: remote.pinned_keys(ctx.ssh.known_hosts, n.ip) for n in (lb1, lb2)}
            return planned, changed, await _probe(layers.ctx, grown.ip), pinned_before, pins

        with entered_netns(ns):
            try:
                planned, changed, probe, pinned_before, pins = asyncio.run(scenario())
                running = find_nodes(cid)
            finally:
                asyncio.run(layers.destroy())
    assert {(c.name, c.action) for c in planned} == {(lb1.name, "change"), (lb2.name, "delete")}
    assert {(c.kind, c.name, c.action) for c in changed["storage"]} == {
        ("volume", f"{lb1.name}/data", "create"), ("node-dir", lb2.name, "delete")}
    assert {(c.name, c.action) for c in changed["vms"]} == {(lb1.name, "change"), (lb2.name, "delete")}
    assert probe["disk"] == str(1024**3) and probe["hostname"] == lb1.name
    assert list(running) == [lb1.name]
    assert not (ctx.cluster_dir / "nspawn" / lb2.name).exists()
    assert len(pinned_before) == 1 and pins[lb2.name] == []  # the removed node's key is forgotten
    assert len(pins[lb1.name]) == 1


def test_an_existing_bridge_named_in_the_config_is_used_and_kept(tmp_path, rootfs, monkeypatch):
    with sshd_lab.lab_netns("kbt3-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        ctx = _context(tmp_path, f"kbt3-{ns[-6:]}", rootfs)
        ctx.config.cluster.network.bridge = "kbt3-br"
        ctx = replace(ctx, topology=replace(ctx.topology, nodes=ctx.topology.nodes[:1]))
        sshd_lab.run("ip", "-n", ns, "link", "add", "kbt3-br", "type", "bridge")
        sshd_lab.run("ip", "-n", ns, "addr", "add", f"{NET}.1/24", "dev", "kbt3-br")
        sshd_lab.run("ip", "-n", ns, "link", "set", "kbt3-br", "up")
        layers = Layers(ctx)
        with entered_netns(ns):
            try:
                applied = asyncio.run(layers.apply("network", "storage", "vms"))
                probe = asyncio.run(_probe(ctx, ctx.topology.nodes[0].ip))
            finally:
                gone = asyncio.run(layers.destroy())
            still = sshd_lab.run("ip", "-o", "addr", "show", "dev", "kbt3-br", check=False)
    assert [(c.action, c.detail) for c in applied["network"]] == [("keep", "existing bridge, used as is")]
    assert probe["hostname"] == ctx.topology.nodes[0].name
    assert gone["network"] == []
    assert still.returncode == 0 and f"{NET}.1/24" in still.stdout
