"""Lab tier: a scale re-renders and reloads HAProxy and keepalived without moving the VIP or failing
a single request.

Two load balancers and a master (systemd-nspawn nodes from the nspawn provider, in a private lab
namespace the test thread enters), configured by the keepalived-haproxy plugin with the default
profile. Masters run the stand-in API server (a TEST DOUBLE of kube-apiserver, which needs the
internet: TLS, GET /readyz, keep-alive). Three clients watch the VIP the whole time from the node
bridge (kubitect_core.failover_streams in a child process): fresh connections, one kept-open
connection (kubectl's way), and who holds the VIP. Meanwhile the cluster is scaled the way the
pipeline does it:

1. a master joins: HAProxy reloads on both load balancers (one more backend);
2. a third load balancer joins: keepalived reloads on both (one more unicast peer), the new one
   starts last;
3. the master leaves HAProxy (reload; it still runs, as before the vms stage removes it), then
   its node is removed;
4. the third load balancer's node is removed (the vms stage runs first), then keepalived reloads
   on the other two.

Every step must be a reload (the services' main PIDs stay), and the clients must see no VIP move
and no failed request (refused, reset, or unanswered for REQUEST_TIMEOUT_S).

Each joining node is made by an nspawn provider context of its own on the same bridge: the nspawn
provider puts every node's /etc/hosts into every node's spec, so adding a node to a context
restarts every node of it (here: the load balancers, or the new master while it serves), which is
a provider matter and would hide what this test is about.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import replace

import nodes_lab
import pytest
import sshd_lab
from kubitect_plugins.nspawn.settings import cluster_bridge
from nodes_lab import lab_context, lb_config, lb_topology, start_standin_api
from nodes_lab import ssh as node_ssh
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core.contracts import StageContext
from kubitect_core.topology import Node, Topology

pytestmark = pytest.mark.lab

NET = "10.86.0"
VIP = f"{NET}.200"
# A request fails when refused, reset, or unanswered this long. The clients' usual 0.25 s (meant
# to time gaps finely) also catches requests slowed by this 2-core lab booting a container next
# to them, which no client would call failed.
REQUEST_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs("openssl")


def _with(topology: Topology, *extra: Node) -> Topology:
    return replace(topology, nodes=(*topology.nodes, *extra))


def _node(topology: Topology, role: str, nid: str, ip: str) -> Node:
    return Node(role=role, id=nid, name=f"{topology.cluster}-{role}-{nid}", host="localhost", ip=ip, mac=None,
                cpu=1, ram_gib=1, main_disk_gib=10)


async def _pids(ctx: StageContext, lbs) -> dict[str, str]:
    return {lb.name: await node_ssh(ctx, lb.ip, "systemctl show -p MainPID --value haproxy keepalived | xargs")
            for lb in lbs}


def test_a_scale_reloads_haproxy_and_keepalived_without_moving_the_vip_or_failing_a_request(
        tmp_path, rootfs, monkeypatch):
    from kubitect_plugins.keepalived_haproxy import KeepalivedHaproxy
    from kubitect_plugins.nspawn import NspawnProvider

    with sshd_lab.lab_netns("kbt6-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbt6-{ns[-6:]}"
        base_topo = lb_topology(cluster, NET, 86)
        master2 = _node(base_topo, "master", "2", f"{NET}.11")
        lb3 = _node(base_topo, "lb", "3", f"{NET}.7")
        base = lab_context(tmp_path / "home", cluster, lb_config(NET), base_topo, nspawn_rootfs=str(rootfs))
        provider, plugin = NspawnProvider(), KeepalivedHaproxy()
        records: dict = {"network": {}, "storage": {}, "vms": {}}
        extra_records: dict = {n.name: {"network": {}, "storage": {}, "vms": {}} for n in (master2, lb3)}
        extra_config = lb_config(NET)
        extra_config.cluster.network.bridge = cluster_bridge(base)  # the cluster's bridge, used as is
        lb_record: dict = {}
        lbs = base_topo.load_balancers
        out: dict = {"steps": {}, "when": {}}

        def ctx(topology: Topology, layer: str | None = None) -> StageContext:
            if layer:
                return replace(base, topology=topology, record=records[layer])
            nodes = dict(records["vms"].get("nodes", {}))
            for extra in extra_records.values():
                nodes.update(extra["vms"].get("nodes", {}))
            facts = {"vms": {"nodes": nodes}}
            return replace(base, topology=topology, record=lb_record, facts=facts)

        async def machines(topology: Topology) -> None:
            for layer in ("network", "storage", "vms"):
                await getattr(provider, layer).apply(ctx(topology, layer), ["localhost"])

        def extra_ctx(node: Node, present: bool, layer: str) -> StageContext:
            return replace(base, cluster_dir=base.cluster_dir.parent / node.name, config=extra_config,
                           topology=replace(base_topo, nodes=(node,) if present else ()),
                           record=extra_records[node.name][layer])

        async def extra_machine(node: Node, present: bool = True) -> None:
            """One joining node in a provider context of its own (see the module docstring)."""
            for layer in ("network", "storage", "vms"):
                await getattr(provider, layer).apply(extra_ctx(node, present, layer), ["localhost"])

        async def step(name: str, topology: Topology) -> None:
            started = time.monotonic()
            changes = await plugin.apply(ctx(topology))
            out["when"][name] = (round(started, 3), round(time.monotonic(), 3))
            out["steps"][name] = sorted((c.host or "", c.name, c.action, c.detail) for c in changes
                                        if c.kind == "service" and c.action != "keep")

        async def scenario():
            await machines(base_topo)
            await start_standin_api(ctx(base_topo), base_topo.masters[0], tmp_path, "kbt6-standin")
            await plugin.apply(ctx(base_topo))
            out["pids_before"] = await _pids(ctx(base_topo), lbs)
            clients = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kubitect_core.failover_streams", VIP, "--until-stdin",
                "--max-seconds", "600", "--timeout", str(REQUEST_TIMEOUT_S),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                ready = await asyncio.wait_for(clients.stdout.readline(), 30)
                assert ready.strip() == b"ready", (ready, await clients.stderr.read())
                await asyncio.sleep(1.0)
                # 1. a master joins
                scaled = _with(base_topo, master2)
                await extra_machine(master2)
                await start_standin_api(ctx(scaled), master2, tmp_path, "kbt6-standin")
                await step("master joins", scaled)
                await asyncio.sleep(1.0)
                # 2. a third load balancer joins
                scaled = _with(base_topo, master2, lb3)
                await extra_machine(lb3)
                await step("lb joins", scaled)
                await asyncio.sleep(2.0)
                # 3. the master leaves HAProxy, then its node goes
                without_master = _with(base_topo, lb3)
                await step("master leaves", without_master)
                await asyncio.sleep(1.0)
                await extra_machine(master2, present=False)
                # 4. the third load balancer's node goes, then the others stop advertising to it
                await extra_machine(lb3, present=False)
                await step("lb leaves", base_topo)
                await asyncio.sleep(2.0)
                out["pids_after"] = await _pids(ctx(base_topo), lbs)
            finally:
                stdout, stderr = await asyncio.wait_for(clients.communicate(b"stop\n"), 60)
            lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
            assert lines, stderr.decode()[-2000:]
            out["clients"] = json.loads(lines[-1])

        with entered_netns(ns):
            try:
                asyncio.run(scenario())
            finally:
                for node in (master2, lb3):
                    for layer in ("vms", "storage", "network"):
                        asyncio.run(getattr(provider, layer).destroy(extra_ctx(node, False, layer), ["localhost"]))
                for layer in ("vms", "storage", "network"):
                    asyncio.run(getattr(provider, layer).destroy(ctx(base_topo, layer), ["localhost"]))

    lb1, lb2 = (lb.name for lb in lbs)
    steps = out["steps"]
    print("\nreload steps:", json.dumps(steps, indent=1), file=sys.stderr)
    assert steps["master joins"] == [(lb1, "haproxy", "change", "reload"), (lb2, "haproxy", "change", "reload")]
    assert (lb1, "keepalived", "change", "reload") in steps["lb joins"]
    assert (lb2, "keepalived", "change", "reload") in steps["lb joins"]
    assert (lb3.name, "keepalived", "create", "enable and start") in steps["lb joins"], "the new one starts (last)"
    assert (lb1, "haproxy", "change", "reload") in steps["master leaves"]
    assert steps["lb leaves"] == [(lb1, "keepalived", "change", "reload"), (lb2, "keepalived", "change", "reload")]
    assert out["pids_after"] == out["pids_before"], "reloads keep HAProxy's and keepalived's main PIDs"
    clients = out["clients"]
    moves = clients["holders"]
    summary = {k: {f: clients[k][f] for f in ("probes", "failures", "outages")} for k in ("fresh", "keepalive")}
    print(f"during the scale: holders {[h[1] for h in moves]}, {json.dumps(summary)}, keep-alive connections "
          f"{clients['keepalive_connects']}", file=sys.stderr)
    windows = {k: (clients[k]["windows"], clients[k]["errors"]) for k in ("fresh", "keepalive")}
    print(f"steps (monotonic start, end): {out['when']}\noutages: {windows}", file=sys.stderr)
    assert len(moves) == 1, f"the VIP moved during the scale: {moves}"
    assert clients["fresh"]["probes"] > 500 and clients["keepalive"]["probes"] > 500
    assert clients["fresh"]["failures"] == 0, clients["fresh"]
    assert clients["keepalive"]["failures"] == 0, clients["keepalive"]
    assert clients["keepalive_connects"] == 1, "the kept-open connection survived every reload"
