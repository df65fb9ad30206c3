"""Lab tier: the keepalived-haproxy plugin's plan/apply/destroy over SSH on systemd-nspawn nodes.

Two load balancers and one master are nspawn containers (real systemd, sshd, HAProxy and
keepalived from the cached rootfs) made by the nspawn provider on a bridge inside a private lab
namespace that the test thread enters. The master runs a stand-in API server (a test double for
kube-apiserver, which needs the internet: TLS, GET /readyz -> 200 + its name). The test thread is
the client: it probes the VIP in-process with kubitect_core.failover.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import sshd_lab
from lb_lab import STANDIN_API
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core import remote
from kubitect_core.contracts import SshAccess, StageContext
from kubitect_core.failover import Prober, expected_budget, holder, readyz
from kubitect_core.topology import Node, Topology

pytestmark = pytest.mark.lab

CACHE_HOME = Path(os.environ.get("KUBITECT_TEST_CACHE", "/var/tmp/kubitect-test-cache"))
NET = "10.89.0"
VIP = f"{NET}.200"
MANAGED = ("/etc/haproxy/haproxy.cfg", "/etc/keepalived/keepalived.conf", "/etc/keepalived/check_haproxy.sh",
           "/etc/sysctl.d/90-kubitect-loadbalancer.conf")


def _config(forward_ports=()):
    return SimpleNamespace(
        cluster=SimpleNamespace(
            network=SimpleNamespace(cidr=f"{NET}.0/24", gateway=f"{NET}.1"),
            node_template=SimpleNamespace(user="k8s", os=SimpleNamespace(network_interface=None)),
            nodes=SimpleNamespace(load_balancer=SimpleNamespace(forward_ports=list(forward_ports))),
        ),
        hosts=[SimpleNamespace(name="localhost", connection=SimpleNamespace(type="local"))],
    )


def _topology(cluster: str) -> Topology:
    def node(role, nid, ip, priority=None):
        return Node(role=role, id=nid, name=f"{cluster}-{role}-{nid}", host="localhost", ip=ip, mac=None,
                    cpu=1, ram_gib=1, main_disk_gib=10, priority=priority)

    return Topology(cluster=cluster, nodes=(node("lb", "1", f"{NET}.5", 200), node("lb", "2", f"{NET}.6", 100),
                                            node("master", "1", f"{NET}.10")),
                    vip=VIP, endpoint=VIP, virtual_router_id=89)


@pytest.fixture(scope="module")
def rootfs():
    sshd_lab.require_lab("systemd-nspawn", "nsenter", "openssl")
    from kubitect_plugins.nspawn.settings import ROOTFS_EXTRA_PACKAGES

    from kubitect_core.images.rootfs import ensure_rootfs

    return ensure_rootfs(CACHE_HOME, extra_packages=ROOTFS_EXTRA_PACKAGES)


async def _ssh(ctx: StageContext, ip: str, cmd: str) -> str:
    async with await remote.connect(ip, user="k8s", key=ctx.ssh.private_key,
                                    known_hosts=ctx.ssh.known_hosts) as node:
        return (await node.run(cmd, sudo=True, check=False, timeout=60)).stdout.strip()


async def _standin_api(ctx: StageContext, master: Node, workdir: Path) -> None:
    key, crt = workdir / "api.key", workdir / "api.crt"
    sshd_lab.run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=kbt4-standin")
    async with await remote.connect(master.ip, user="k8s", key=ctx.ssh.private_key,
                                    known_hosts=ctx.ssh.known_hosts) as node:
        await node.put(STANDIN_API, "/opt/standin/api.py", sudo=True)
        await node.put(crt.read_bytes(), "/opt/standin/api.crt", sudo=True)
        await node.put(key.read_bytes(), "/opt/standin/api.key", mode=0o600, sudo=True)
        await node.run("systemd-run --unit=standin-api python3 /opt/standin/api.py "
                       f"{master.name} /opt/standin/api.crt /opt/standin/api.key 6443", sudo=True)
    for _ in range(100):
        ok, _body = await readyz(master.ip, timeout=1)
        if ok:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the stand-in API server on the master never answered")


async def _service_pids(ctx: StageContext, lbs) -> dict[str, str]:
    out = {}
    for lb in lbs:
        out[lb.name] = await _ssh(ctx, lb.ip, "systemctl show -p MainPID --value haproxy keepalived | tr '\\n' ' '")
    return out


async def _holders(ctx: StageContext, lbs) -> list[str]:
    return [lb.name for lb in lbs if f"{VIP}/32" in await _ssh(ctx, lb.ip, "ip -4 -o addr show")]


async def _wait_holder(ctx: StageContext, lbs, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await holder(VIP) == name and await _holders(ctx, lbs) == [name]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} never became the only VIP holder: {await _holders(ctx, lbs)}")


def test_apply_converges_load_balancers_and_a_second_run_restarts_nothing(tmp_path, rootfs, monkeypatch):
    from kubitect_plugins.keepalived_haproxy import KeepalivedHaproxy, VrrpSettings
    from kubitect_plugins.nspawn import NspawnProvider
    from kubitect_plugins.nspawn.settings import ROOTFS_ENV  # noqa: F401  (the provider reads options)

    with sshd_lab.lab_netns("kbt4-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt4-{ns[-6:]}"
        home = tmp_path / "home"
        cdir = home / "clusters" / cluster
        sshd_lab.write_keypair(cdir / "ssh" / "id_ed25519", comment=f"kubitect-{cluster}")
        access = SshAccess(user="k8s", private_key=cdir / "ssh" / "id_ed25519",
                           public_key=cdir / "ssh" / "id_ed25519.pub", known_hosts=cdir / "ssh" / "known_hosts")
        base = StageContext(cluster=cluster, config=_config(), topology=_topology(cluster), cluster_dir=cdir,
                            home=home, ssh=access, record={}, options={"nspawn_rootfs": str(rootfs)})
        provider, plugin = NspawnProvider(), KeepalivedHaproxy()
        records = {"network": {}, "storage": {}, "vms": {}}
        lb_record: dict = {}

        def ctx_for(layer: str) -> StageContext:
            return replace(base, record=records[layer])

        lb_ctx = replace(base, record=lb_record, facts={"vms": records["vms"]})
        lbs = base.topology.load_balancers
        settings = VrrpSettings()
        out: dict = {}

        async def scenario():
            for layer in ("network", "storage", "vms"):
                await provider.apply(layer, ctx_for(layer), ["localhost"])
            await _standin_api(lb_ctx, base.topology.masters[0], tmp_path)
            out["plan_before"] = await plugin.plan(lb_ctx)
            out["first"] = await plugin.apply(lb_ctx)
            out["record"] = copy.deepcopy(lb_record)
            await _wait_holder(lb_ctx, lbs, lbs[0].name)
            out["through_vip"] = await readyz(VIP, timeout=2)
            out["pids"] = await _service_pids(lb_ctx, lbs)
            out["second"] = await plugin.apply(lb_ctx)
            out["plan_after"] = await plugin.plan(lb_ctx)
            out["pids_after"] = await _service_pids(lb_ctx, lbs)
            out["sysctl"] = await _ssh(lb_ctx, lbs[1].ip, "sysctl -n net.ipv4.ip_nonlocal_bind; "
                                                          "cat /etc/sysctl.d/90-kubitect-loadbalancer.conf")
            # a real failover on real systemd: stop keepalived on the holder
            async with Prober(VIP) as prober:
                await prober.wait_ready()
                prober.mark()
                await _ssh(lb_ctx, lbs[0].ip, "systemctl stop keepalived")
                out["failover"] = await prober.wait_recovered(15, quiet=3)
            out["holder_after_stop"] = await holder(VIP)
            out["heal"] = await plugin.apply(lb_ctx)  # keepalived is started again
            await _wait_holder(lb_ctx, lbs, lbs[0].name)
            # a config change is validated, uploaded and reloaded, not restarted
            changed_ctx = replace(lb_ctx, config=_config([SimpleNamespace(name="http", port=8080, target_port=None,
                                                                          target="masters")]))
            out["pids_before_change"] = await _service_pids(lb_ctx, lbs)
            out["changed"] = await plugin.apply(changed_ctx)
            out["pids_after_change"] = await _service_pids(lb_ctx, lbs)
            out["destroyed"] = await plugin.destroy(changed_ctx)
            out["after_destroy"] = await _ssh(lb_ctx, lbs[0].ip, "systemctl is-active haproxy keepalived; "
                                                                 f"ls {' '.join(MANAGED)} 2>/dev/null")

        with entered_netns(ns):
            try:
                asyncio.run(scenario())
            finally:
                for layer in ("vms", "storage", "network"):
                    asyncio.run(provider.destroy(layer, ctx_for(layer), ["localhost"]))

    def actions(changes, kind=None):
        return {(c.kind, c.name, c.host, c.action) for c in changes if kind is None or c.kind == kind}

    lb1, lb2 = (lb.name for lb in lbs)
    first = out["first"]
    # haproxy.cfg replaces the package's default ("change"); the keepalived files are new
    assert {(c.name, c.action) for c in first if c.kind == "file" and c.host == lb1} == {
        ("/etc/haproxy/haproxy.cfg", "change"), ("/etc/keepalived/keepalived.conf", "create"),
        ("/etc/keepalived/check_haproxy.sh", "create")}
    assert {(c.name, c.host, c.action) for c in first if c.kind == "service"} == {
        (s, n, "create") for s in ("haproxy", "keepalived") for n in (lb1, lb2)}
    assert {c.action for c in out["plan_before"] if c.kind == "file"} == {"create", "change"}
    assert {c.action for c in out["plan_before"] if c.kind == "service"} == {"create"}, "plan started nothing"
    record = out["record"]
    assert record["endpoint"] == VIP and record["vip"] == VIP
    assert set(record["nodes"]) == {lb1, lb2} and all(len(h) == 3 for h in
                                                          (n["hashes"] for n in record["nodes"].values()))
    assert out["through_vip"] == (True, base.topology.masters[0].name), "the client reaches the master via the VIP"
    assert {c.action for c in out["second"]} == {"keep"}, [c for c in actions(out["second"]) if c[3] != "keep"]
    assert {c.action for c in out["plan_after"]} == {"keep"}, actions(out["plan_after"])
    assert out["pids_after"] == out["pids"], "a second apply restarts nothing"
    assert out["sysctl"].startswith("1\n") and "net.ipv4.ip_nonlocal_bind = 1" in out["sysctl"]
    fo = out["failover"]
    budget = expected_budget(settings, backup_priority=100)["keepalived_stopped"]
    print(f"\nnspawn failover (systemctl stop keepalived): gap {fo.gap_ms:.1f} ms (budget {budget} ms)",
          file=sys.stderr)
    assert fo.recovered and fo.gap_ms <= budget
    assert out["holder_after_stop"] == lb2
    assert ("service", "keepalived", lb1, "create") in actions(out["heal"])
    changed = actions(out["changed"])
    assert ("file", "/etc/haproxy/haproxy.cfg", lb1, "change") in changed
    assert ("service", "haproxy", lb1, "change") in changed and ("service", "keepalived", lb1, "keep") in changed
    assert out["pids_after_change"] == out["pids_before_change"], "a reload keeps the service's main PID"
    assert {c.host for c in out["destroyed"]} == {lb1, lb2} and lb_record == {}
    assert "active" not in out["after_destroy"].replace("inactive", "")
    assert not [f for f in MANAGED if f in out["after_destroy"]], out["after_destroy"]
