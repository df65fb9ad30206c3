"""Lab tier: scale workers and load balancers out and in through the real engine, with clients of the
VIP running the whole time.

What is real: the engine (its removal phase, the `kubitect_nodes_leaving` hook, change of record),
the nspawn provider (systemd-nspawn nodes in a private lab namespace), keepalived and HAProxy
configured by the keepalived-haproxy plugin, the kubeadm installer plugin, SSH. What is a TEST
DOUBLE: the Kubernetes binaries (tests/lab/doubles/kube_double.py: they need the internet). The
double keeps a cluster's nodes, pods and PodDisruptionBudgets on the first master and behaves as
kubectl documents, so the order of the steps matters and is asserted from its call log.

One lab, one cluster (two load balancers with a VIP, one master, one worker), then in order:

1. a worker joins (fresh bootstrap token);
2. pods are planted on it, one of them guarded by a PodDisruptionBudget that allows no
   eviction; removing the worker fails in the drain, naming the pods, and the machine stays;
3. the budget is relaxed and the same removal is re-run: cordon, drain, kubelet stopped,
   `kubectl delete node`, then the machine is deleted;
4. a third load balancer joins (keepalived and HAProxy on the others reload);
5. it leaves again (keepalived stopped first, then its machine, then the others reload).

Three clients watch the VIP all along (kubitect_core.failover_streams): fresh TLS connections, one
kept-open connection, and who holds the VIP. The test prints the failed requests and its wall time.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import time

import nodes_lab
import pytest
import sshd_lab
import yaml
from doubles.install import install_doubles
from sshd_lab import LAB_MARK_ENV, entered_netns

from kubitect_core import remote
from kubitect_core.engine import Engine, Options, StageFailed
from kubitect_core.hookspecs import hookimpl
from kubitect_core.plugins import load_registry
from kubitect_core.state import ClusterState

pytestmark = pytest.mark.lab

NET = "10.89.0"
VIP = f"{NET}.100"
VERSION = "v1.34.2"
DOUBLE = "/usr/local/lib/kubitect-doubles/kube_double.py"
REQUEST_TIMEOUT_S = 1.0  # as test_lb_reload: a request slowed by a container booting next to it is not lost


def _config(cluster: str, workers=(1,), lbs=(1, 2)) -> dict:
    lb_ips = {1: (f"{NET}.11", 200), 2: (f"{NET}.12", 150), 3: (f"{NET}.13", 50)}
    return nodes_lab.nspawn_cluster(cluster, NET, {
        "loadBalancer": {"vip": VIP, "instances": [{"id": i, "ip": lb_ips[i][0], "priority": lb_ips[i][1]}
                                                   for i in lbs]},
        "master": {"instances": [{"id": 1, "ip": f"{NET}.21"}]},
        "worker": {"instances": [{"id": i, "ip": f"{NET}.3{i}"} for i in workers]},
    }, VERSION)


class StageClock:
    """Observer: when each stage (and the removal phase) started and what it reported, on the wall
    clock the doubles write into their call log (the nodes share this machine's clock)."""

    def __init__(self):
        self.started: list[tuple[str, float]] = []
        self.said: list[tuple[str, str, str, float]] = []

    @hookimpl
    def kubitect_stage_started(self, cluster, stage, action):
        self.started.append((stage, time.time()))

    @hookimpl
    def kubitect_stage_progress(self, cluster, stage, subject, message):
        self.said.append((stage, subject, message, time.time()))

    def last(self, stage: str) -> float:
        return [t for s, t in self.started if s == stage][-1]

    def when(self, subject: str, words: str) -> float:
        """The last time a stage said `words` about `subject`."""
        return [t for _, who, what, t in self.said if who == subject and words in what][-1]


@pytest.fixture(scope="module")
def rootfs():
    return nodes_lab.nspawn_rootfs("keepalived", "haproxy", "openssl")


def test_scale_workers_and_load_balancers_out_and_in_without_failing_a_request(rootfs, tmp_path, monkeypatch):
    started = time.monotonic()
    with sshd_lab.lab_netns("kbsc-") as ns:
        monkeypatch.setenv(LAB_MARK_ENV, ns)
        cluster = f"kbsc-{ns[-6:]}"
        home = tmp_path / "home"
        clock = StageClock()
        engine = Engine(home, load_registry(extra_plugins=[clock]))
        state = ClusterState(home, cluster)
        flags = {"nspawn_rootfs": str(rootfs), "installer_source": "preinstalled", "ready_timeout": 60}
        out: dict = {"phases": {}}

        def cfg(name: str, **shape) -> object:
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump(_config(cluster, **shape), sort_keys=False))
            return path

        base, more_workers, more_lbs = cfg("base"), cfg("workers", workers=(1, 2)), cfg("lbs", lbs=(1, 2, 3))

        def run(path, stages, **extra):
            return engine.run_stages(path, stages, Options(flags={**flags, **extra}))

        async def on(ip: str, cmd: str, check: bool = True) -> str:
            ssh = state.ssh_dir
            async with await remote.connect(ip, user="k8s", key=ssh / "id_ed25519",
                                            known_hosts=ssh / "known_hosts") as node:
                return (await node.run(cmd, sudo=True, check=check, timeout=60)).stdout

        async def calls(ip: str) -> list[dict]:
            text = await on(ip, "cat /var/log/kubitect-doubles/calls.jsonl 2>/dev/null || true")
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        async def cluster_state() -> dict:
            return json.loads(await on(f"{NET}.21", f"python3 {DOUBLE} state"))

        async def plant(**objects) -> None:
            await on(f"{NET}.21", f"python3 {DOUBLE} plant {shlex.quote(json.dumps(objects))}")

        async def answers(ip: str) -> bool:
            """Whether anything still listens on the node's SSH port (from this thread, in the lab)."""
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, 22), 2)
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True

        def nodes_of(path):
            return engine.load(path).topology

        async def phase(name: str, coro):
            t0 = time.monotonic()
            result = await coro
            out["phases"][name] = round(time.monotonic() - t0, 1)
            return result

        async def scenario():
            await run(base, ["network", "storage", "vms", "loadbalancers"])
            ssh = engine._ssh(state, engine.load(base), create=False)
            await install_doubles(ssh, [n for n in nodes_of(base).nodes if n.role != "lb"], VERSION)
            await run(base, ["kubernetes"])
            out["setup_s"] = round(time.monotonic() - started, 1)
            clients = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kubitect_core.failover_streams", VIP, "--until-stdin", "--max-seconds", "600",
                "--timeout", str(REQUEST_TIMEOUT_S), "--interval", "0.05",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                ready = await asyncio.wait_for(clients.stdout.readline(), 30)
                assert ready.strip() == b"ready", (ready, await clients.stderr.read())
                w2 = next(n for n in nodes_of(more_workers).workers if n.id == "2")
                lb3 = next(n for n in nodes_of(more_lbs).load_balancers if n.id == "3")

                # 1. a worker joins: machine, then the doubles on it, then the installer joins it
                machines = ["network", "storage", "vms"]

                async def worker_out():
                    await run(more_workers, machines)
                    await install_doubles(ssh, [w2], VERSION)
                    await run(more_workers, ["loadbalancers", "kubernetes"])
                await phase("worker out", worker_out())
                out["after_join"] = await cluster_state()
                out["master_calls_join"] = await calls(f"{NET}.21")
                out["w2_calls"] = await calls(w2.ip)

                # 2. pods on the new worker, a budget that allows no eviction: the removal stops in the drain
                await plant(pods=[
                    {"name": "web-a1", "node": w2.name, "labels": {"app": "web"}},
                    {"name": "web-b2", "node": w2.name, "labels": {"app": "web"}},
                    {"name": "web-c3", "node": f"{cluster}-worker-1", "labels": {"app": "web"}},
                    {"name": "cache-d4", "node": w2.name, "labels": {"app": "cache"}, "emptydir": True},
                    {"name": "proxy-w2", "namespace": "kube-system", "node": w2.name, "owner": "DaemonSet"}],
                    pdbs=[{"name": "web", "selector": {"app": "web"}, "minAvailable": 3}])
                t0 = time.monotonic()
                with pytest.raises(StageFailed) as failed:
                    await run(base, [*machines, "loadbalancers", "kubernetes"], drain_timeout=2)
                out["refused"] = (str(failed.value), round(time.monotonic() - t0, 1))
                out["after_refusal"] = await cluster_state()
                out["w2_alive"] = (await on(w2.ip, "hostname")).strip()

                # 3. the budget relaxed, the same removal converges
                await plant(pdbs=[{"name": "web", "selector": {"app": "web"}, "minAvailable": 2}])
                await phase("worker in", run(base, [*machines, "loadbalancers", "kubernetes"]))
                out["machines_started"] = clock.last("network")  # the first machine stage
                out["removal_started"] = clock.last("remove-nodes")
                out["w2_stopped"] = clock.when(w2.name, "stopping container")  # storage: the node goes
                out["after_removal"] = await cluster_state()
                out["master_calls"] = await calls(f"{NET}.21")
                out["w2_answers"] = await answers(w2.ip)

                # 4. a third load balancer joins (lowest priority: the VIP stays where it is)
                pids = "systemctl show -p MainPID --value haproxy keepalived | xargs"
                out["pids_before"] = {ip: (await on(ip, pids)).strip() for ip in (f"{NET}.11", f"{NET}.12")}
                await phase("lb out", run(more_lbs, [*machines, "loadbalancers"]))
                out["lb3_keepalived"] = (await on(lb3.ip, "systemctl is-active keepalived", check=False)).strip()
                # 5. and leaves again
                await phase("lb in", run(base, [*machines, "loadbalancers"]))
                out["lb3_handover"] = clock.when(lb3.name, "stopping keepalived")
                out["lb3_stopped"] = clock.when(lb3.name, "stopping container")
                out["lb3_answers"] = await answers(lb3.ip)
                out["pids_after"] = {ip: (await on(ip, pids)).strip() for ip in (f"{NET}.11", f"{NET}.12")}
                out["keepalived_lb1"] = await on(f"{NET}.11", "cat /etc/keepalived/keepalived.conf")
                await asyncio.sleep(1.0)
            finally:
                stdout, stderr = await asyncio.wait_for(clients.communicate(b"stop\n"), 60)
            lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
            assert lines, stderr.decode()[-2000:]
            out["clients"] = json.loads(lines[-1])

            # 6. the VIP holder itself leaves (clients started afresh: the VIP moves, once, by design)
            holder = f"{cluster}-lb-1"
            clients = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kubitect_core.failover_streams", VIP, "--until-stdin", "--max-seconds", "120",
                "--timeout", str(REQUEST_TIMEOUT_S), "--interval", "0.05",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                ready = await asyncio.wait_for(clients.stdout.readline(), 30)
                assert ready.strip() == b"ready", (ready, await clients.stderr.read())
                await phase("vip holder in", run(cfg("holder-gone", lbs=(2,)), [*machines, "loadbalancers"]))
                out["holder_handover"] = clock.when(holder, "stopping keepalived")
                out["holder_stopped"] = clock.when(holder, "stopping container")
                await asyncio.sleep(1.0)
            finally:
                stdout, stderr = await asyncio.wait_for(clients.communicate(b"stop\n"), 60)
            lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
            assert lines, stderr.decode()[-2000:]
            out["holder_clients"] = json.loads(lines[-1])

        with entered_netns(ns):
            try:
                asyncio.run(scenario())
            finally:
                asyncio.run(engine.destroy(cluster, Options(flags=flags)))
    wall = time.monotonic() - started

    w2 = f"{cluster}-worker-2"
    clients = out["clients"]
    failed = {k: clients[k]["failures"] for k in ("fresh", "keepalive")}
    print(f"\nscale lab: requests failed through the VIP {failed} of "
          f"{ {k: clients[k]['probes'] for k in ('fresh', 'keepalive')} }, VIP holders {clients['holders']}, "
          f"phases {out['phases']} s, setup {out['setup_s']} s, wall time {wall:.1f} s", file=sys.stderr)

    moved = out["holder_clients"]
    print(f"VIP holder removed: holders {[h[1] for h in moved['holders']]}, failed requests "
          f"{ {k: moved[k]['failures'] for k in ('fresh', 'keepalive')} } of "
          f"{ {k: moved[k]['probes'] for k in ('fresh', 'keepalive')} }, kept-open connection reconnected "
          f"{moved['keepalive_connects'] - 1} time(s), gaps {[moved[k]['gap_ms'] for k in ('fresh', 'keepalive')]} ms",
          file=sys.stderr)

    # 1. the worker joined with a fresh token, created on the master before its join
    assert w2 in out["after_join"]["nodes"]
    fresh = [c for c in out["master_calls_join"] if c["tool"] == "kubeadm"
             and c["argv"][:3] == ["init", "phase", "bootstrap-token"] and c.get("phase") != "end"]
    join = next(c for c in out["w2_calls"] if c["tool"] == "kubeadm" and c["argv"][:1] == ["join"])
    assert fresh and fresh[-1]["t"] < join["t"]
    init = next(c for c in out["master_calls_join"] if c["tool"] == "kubeadm" and c["argv"][:1] == ["init"]
                and "phase" not in c["argv"])
    token = lambda c: re.search(r'token:\s*"?([a-z0-9]{6}\.[a-z0-9]{16})', c["config"]).group(1)  # noqa: E731
    assert token(fresh[-1]) == token(join) != token(init), "the join used a new token, not kubeadm init's"

    # 2. the budget stopped the drain: named pods, node cordoned, machine alive, nothing deleted
    message, refused_s = out["refused"]
    assert "default/web-a1" in message and "default/web-b2" in message and "PodDisruptionBudget" in message
    assert "remove-nodes" in message and refused_s < 60
    assert out["after_refusal"]["nodes"][w2].get("unschedulable") is True
    assert out["w2_alive"] == w2

    # 3. the re-run: per node, cordon < drain < delete node < the machine stage
    mine = [c for c in out["master_calls"] if c["tool"] == "kubectl" and w2 in c["argv"]]
    verbs = [c["argv"][2 if c["argv"][0] == "--kubeconfig" else 0] for c in mine]
    steps = [v for v in verbs if v in ("cordon", "drain", "delete")]
    assert steps == ["cordon", "drain", "cordon", "drain", "delete"], steps  # refused once, then converged
    t = {v: c["t"] for v, c in zip(verbs, mine, strict=True)}  # the last call of each verb
    assert out["removal_started"] < t["cordon"] < t["drain"] < t["delete"] < out["machines_started"] \
        < out["w2_stopped"]
    assert w2 not in out["after_removal"]["nodes"]
    pods = out["after_removal"]["pods"]
    assert not [p for p in pods.values() if p["node"] == w2]
    assert sum(1 for p in pods.values() if p["labels"].get("app") == "web" and p["phase"] == "Running") == 3
    assert out["w2_answers"] is False, "the worker's machine is gone"

    # 4./5. load balancers: the new one ran keepalived, the others only reloaded, then it is gone
    assert out["lb3_keepalived"] == "active"
    assert out["pids_after"] == out["pids_before"], "HAProxy and keepalived reloaded, never restarted"
    assert f"{NET}.13" not in out["keepalived_lb1"], "the others no longer advertise to the removed one"
    assert out["lb3_answers"] is False
    assert out["lb3_handover"] < out["lb3_stopped"], "keepalived stopped before the machine"

    # the clients saw nothing of it
    assert len(clients["holders"]) == 1, f"the VIP moved: {clients['holders']}"
    assert clients["fresh"]["probes"] > 100 and clients["keepalive"]["probes"] > 100
    assert failed == {"fresh": 0, "keepalive": 0}, {k: clients[k] for k in ("fresh", "keepalive")}
    assert clients["keepalive_connects"] == 1

    # 6. the holder handed the VIP over (keepalived stopped) before its machine went; the VIP moved once
    assert out["holder_handover"] < out["holder_stopped"]
    assert [h[1] for h in moved["holders"]] == [f"{cluster}-lb-1", f"{cluster}-lb-2"]
