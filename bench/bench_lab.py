"""The cluster the failover benchmark and the soak run on, and the faults they inject into it.

Two load balancers (no priorities set: Kubitect's defaults, as in the seed) and one master, built
by kubitect itself (the engine's network, storage, vms and loadbalancers stages) inside a private
lab namespace: systemd-nspawn containers (`nspawn`) or TCG VMs under a lab libvirtd (`vm`). The
master runs the stand-in API server (a TEST DOUBLE of kube-apiserver, which needs the internet:
TLS, GET /readyz, keep-alive). The calling thread enters the lab namespace, so the engine's SSH,
the probers (kubitect_core.failover_streams, started as child processes) and `ip` commands all run on the
lab's node bridge and nothing touches the root namespace.

A configuration under test is one of CONFIGS: `kubitect` (Kubitect's own keepalived settings,
bench/kubitect_original.py) or one of the plugin's profiles (`standard`, `fast`, applied by the
real loadbalancers stage). Faults (FAULTS) are injected on the VIP holder:

- keepalived_stopped: `systemctl stop keepalived` (a graceful goodbye: priority-0 advert);
- haproxy_killed: SIGKILL of HAProxy's process group, systemd's restart held off (as in the
  conformance matrix: else systemd would hide whether keepalived tracks HAProxy at all);
- keepalived_crashed: SIGKILL of keepalived's process group (no goodbye);
- link_cut: the holder's port on the node bridge goes down (the holder lives on, cut off);
- host_lost: the holder's whole machine is gone at once: its bridge port down and the machine
  powered off in the same instant (nspawn: SIGKILL of the container's init, i.e. its whole PID
  namespace; vm: `virsh destroy`). It comes back as a fresh boot, configured by the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import kubitect_original  # noqa: E402

from kubitect_core import remote  # noqa: E402
from kubitect_core.failover import holder as vip_answerer  # noqa: E402
from kubitect_core.remote import Remote, RemoteError  # noqa: E402
from kubitect_core.topology import Node  # noqa: E402

CONFIGS = ("kubitect", "standard", "fast")
FAULTS = ("keepalived_stopped", "haproxy_killed", "keepalived_crashed", "link_cut", "host_lost")
VRRP_KEY = "cluster.nodes.loadBalancer.vrrp"
NOT_RESTARTING = "/run/systemd/system/haproxy.service.d/50-bench-no-restart.conf"


def kill_group(unit: str) -> str:
    """Shell: SIGKILL the whole process group of a unit's main process at once."""
    return (f"pid=$(systemctl show -p MainPID --value {unit}); pg=$(ps -o pgid= -p \"$pid\" | tr -d ' '); "
            f"[ -n \"$pg\" ] && [ \"$pg\" -gt 1 ] && kill -9 -\"$pg\"")


def cluster_config(kind: str, cluster: str, net: str, *, image: Path | None = None,
                   pools: Path | None = None, bridge: str) -> dict:
    """The lab cluster's kubitect config (two load balancers without priorities, one master)."""
    size = {"cpu": 1, "ram": 1, "mainDiskSize": 4}
    lbs = [{"id": 1, "ip": f"{net}.11"}, {"id": 2, "ip": f"{net}.12"}]
    master = [{"id": 1, "ip": f"{net}.21"}]
    if kind == "nspawn":
        hosts = [{"name": "lab", "connection": {"type": "local"}, "provider": "nspawn"}]
        template = {"user": "k8s", "os": {"distro": "debian12", "networkInterface": "host0"}}
        network = {"mode": "bridge", "cidr": f"{net}.0/24", "bridge": bridge}
    else:
        hosts = [{"name": "lab", "connection": {"type": "local"}, "mainResourcePoolPath": str(pools)}]
        template = {"user": "k8s", "updateOnBoot": False, "os": {"distro": "debian12", "source": str(image)}}
        network = {"mode": "bridge", "cidr": f"{net}.0/24", "gateway": f"{net}.1", "bridge": bridge}
        lbs = [{**lb, **size} for lb in lbs]
        master = [{**m, **size} for m in master]
    return {"hosts": hosts,
            "cluster": {"name": cluster, "network": network, "nodeTemplate": template,
                        "nodes": {"loadBalancer": {"vip": f"{net}.100", "instances": lbs},
                                  "master": {"instances": master}}},
            "kubernetes": {"version": "v1.34.2", "manager": "kubeadm"}}


@dataclass
class Probed:
    """One run of the VIP clients around a fault: its JSON and when the fault was injected."""

    result: dict[str, Any]
    started: float  # time.monotonic() when the fault command was sent
    injected: float  # ... and when it returned
    inject_s: float  # how long the fault command took (the takeover time's resolution)


@dataclass
class BenchLab:
    """A running lab cluster; use inside the lab namespace (sshd_lab.entered_netns)."""

    kind: str
    ns: str
    home: Path
    config_path: Path
    raw: dict
    flags: dict[str, Any]
    engine: Any = None
    log: Any = print
    remotes: dict[str, Remote] = field(default_factory=dict)
    config_name: str = ""
    notes: list[str] = field(default_factory=list)
    ssh: Any = None
    # what the fresh-connection client asks (kubitect_core.failover_streams --fresh-target): on TCG
    # VMs the stand-in API cannot answer a TLS handshake every 20 ms, so HAProxy's whoami is asked
    fresh_target: str = "api"
    # seconds between requests of each client stream (kubitect_core.failover_streams --interval):
    # on TCG VMs 0.05, since 2 x 50 new connections a second are more than HAProxy on one emulated
    # vCPU answers in time (a bridge capture: median answer 0.5 s, SYNs dropped), which would
    # measure the prober's own load instead of the VIP's gap
    interval: float = 0.02

    # ------------------------------------------------------------------ cluster

    @property
    def cluster(self) -> str:
        return self.raw["cluster"]["name"]

    @property
    def vip(self) -> str:
        return self.raw["cluster"]["nodes"]["loadBalancer"]["vip"]

    def topology(self):
        return self.engine.load(self.config_path).topology

    @property
    def lbs(self) -> list[Node]:
        return list(self.topology().load_balancers)

    def by_name(self, name: str) -> Node:
        return next(n for n in self.topology().nodes if n.name == name)

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.raw, sort_keys=False))

    async def stages(self, *names: str) -> None:
        from kubitect_core.engine import Options

        await self.engine.run_stages(self.config_path, list(names), Options(flags=self.flags))

    async def up(self) -> None:
        """Builds the cluster with kubitect and starts the stand-in API on the master."""
        from kubitect_core.engine import Engine
        from kubitect_core.plugins import load_registry
        from kubitect_core.state import ClusterState

        self.engine = Engine(self.home, load_registry(), confirm=lambda _question: True)
        self.raw["cluster"]["nodes"]["loadBalancer"]["vrrp"] = {"profile": "fast"}
        self.write_config()
        started = time.monotonic()
        await self.stages("network", "storage", "vms", "loadbalancers")
        self.log(f"lab up ({self.kind}) in {time.monotonic() - started:.0f} s")
        loaded = self.engine.load(self.config_path)
        self.ssh = self.engine._ssh(ClusterState(self.home, self.cluster), loaded, create=False)
        await self.start_api()

    async def down(self) -> None:
        from kubitect_core.engine import Options

        for r in self.remotes.values():
            with contextlib.suppress(Exception):
                await r.close()
        self.remotes.clear()
        if self.engine is not None:
            await self.engine.destroy(self.cluster, Options(flags=self.flags))

    async def start_api(self) -> None:
        """The stand-in API server (test double) on the master, as a transient systemd unit."""
        import nodes_lab

        from kubitect_core.contracts import StageContext

        master = self.topology().masters[0]
        ctx = StageContext(cluster=self.cluster, config=None, topology=self.topology(), cluster_dir=self.home,
                           home=self.home, ssh=self.ssh, record={})
        workdir = self.home / "standin"
        workdir.mkdir(exist_ok=True)
        await nodes_lab.start_standin_api(ctx, master, workdir, f"{self.cluster}-api")

    # ------------------------------------------------------------------ nodes

    async def remote(self, name: str) -> Remote:
        node = self.by_name(name)
        if name not in self.remotes:
            self.remotes[name] = await remote.connect(node.ip, user=self.ssh.user, key=self.ssh.private_key,
                                                      known_hosts=self.ssh.known_hosts, name=name)
        return self.remotes[name]

    def forget(self, name: str) -> None:
        conn = self.remotes.pop(name, None)
        if conn is not None:
            asyncio.get_running_loop().create_task(conn.close())

    async def root(self, name: str, command: str, *, check: bool = True, timeout: float = 60) -> Any:
        """A shell command as root on a node; one reconnect if the connection died."""
        for attempt in (1, 2):
            try:
                node = await self.remote(name)
                return await node.run(command, sudo=True, check=check, timeout=timeout)
            except RemoteError:
                self.forget(name)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def holders(self) -> list[str]:
        """Load balancers whose interfaces carry the VIP (unreachable ones are left out)."""
        async def one(lb: Node) -> str | None:
            try:
                res = await self.root(lb.name, "ip -4 -o addr show", check=False, timeout=10)
            except RemoteError:
                return None
            return lb.name if f" {self.vip}/" in res.stdout else None
        return [h for h in await asyncio.gather(*(one(lb) for lb in self.lbs)) if h]

    async def vrrp_state(self, name: str) -> str:
        """The VRRP state keepalived last logged on a node since it last started (MASTER, BACKUP,
        FAULT, ...), STOPPED when it does not run (or HAProxy does not)."""
        res = await self.root(name, (
            "systemctl is-active --quiet keepalived haproxy || { echo STOPPED; exit 0; }; "
            "since=$(systemctl show -p ActiveEnterTimestamp --value keepalived); "
            "journalctl -u keepalived -o cat --no-pager --since \"$since\" | "
            "grep -o 'Entering [A-Z]* STATE' | tail -1"), check=False, timeout=15)
        words = res.stdout.split()
        return words[1] if len(words) == 3 else words[0] if words == ["STOPPED"] else "UNKNOWN"

    async def settle(self, timeout: float = 90.0) -> str:
        """Waits for one holder, every other load balancer in BACKUP (able to take over) and the
        client here reaching the holder through the VIP, twice in a row; returns the holder.

        A client can keep the MAC of a holder that yielded (two holders after a cut link healed,
        and the one that stayed sent no gratuitous ARP: Kubitect's settings have no
        vrrp_garp_lower_prio_repeat), black-holed until its neighbour entry ages out. That is the
        aftermath of the previous run, not the next fault: after 3 s of it the entry is flushed
        here (this lab namespace only) and the fact kept in the notes."""
        deadline = time.monotonic() + timeout
        good = 0
        last = ""
        astray_since: float | None = None
        while time.monotonic() < deadline:
            holders = await self.holders()
            if len(holders) == 1:
                others = [lb.name for lb in self.lbs if lb.name != holders[0]]
                states = await asyncio.gather(*(self.vrrp_state(o) for o in others))
                answer = await vip_answerer(self.vip, timeout=1.0)
                last = f"holder {holders[0]}, others {dict(zip(others, states, strict=True))}, answering {answer}"
                if answer != holders[0]:
                    astray_since = astray_since or time.monotonic()
                    if time.monotonic() - astray_since > 3:
                        subprocess.run(["ip", "neigh", "flush", "to", self.vip], check=False, capture_output=True)
                        note = (f"{self.config_name}: the client here was left with a yielded holder's MAC for the "
                                "VIP after a run (no gratuitous ARP from the holder that stayed); its neighbour "
                                "entry was flushed before the next run")
                        if note not in self.notes:
                            self.notes.append(note)
                        self.log(note)
                        astray_since = None
                else:
                    astray_since = None
                good = good + 1 if all(s == "BACKUP" for s in states) and answer == holders[0] else 0
                if good >= 2:
                    return holders[0]
            else:
                good, last = 0, f"holders {holders}"
            await asyncio.sleep(0.3)
        raise TimeoutError(f"the VIP did not settle within {timeout} s: {last}")

    # ------------------------------------------------------------------ configurations

    async def use(self, config: str) -> None:
        """Puts one configuration under test on every load balancer, keepalived freshly started."""
        if config == "kubitect":
            await self._use_kubitect(self.lbs)
        else:
            self.raw["cluster"]["nodes"]["loadBalancer"]["vrrp"] = {"profile": config}
            self.write_config()
            await self.stages("loadbalancers")
        self.config_name = config
        await self.restart_keepalived()

    async def restart_keepalived(self) -> None:
        """Restarts keepalived on every load balancer, the holder last, and waits until settled."""
        holder = (await self.holders() or [None])[0]
        for lb in sorted(self.lbs, key=lambda n: n.name == holder):  # the holder last
            await self.root(lb.name, "systemctl restart keepalived")
        await self.settle()

    async def _use_kubitect(self, nodes: list[Node]) -> None:
        from kubitect_plugins.keepalived_haproxy.plugin import NIC_QUERY
        from kubitect_plugins.keepalived_haproxy.render import Layout

        topo = self.topology()
        for lb in nodes:
            nic = (await self.root(lb.name, NIC_QUERY.format(ip=lb.ip))).stdout.split()[0]
            killall = (await self.root(lb.name, "test -x /usr/bin/killall", check=False)).ok
            if not killall:
                note = f"{lb.name}: no killall here; Kubitect's check runs as `{kubitect_original.PGREP}`"
                if note not in self.notes:
                    self.notes.append(note)
            text = kubitect_original.render(nic=nic, vip=self.vip, priority=lb.priority,
                                            virtual_router_id=topo.virtual_router_id, has_killall=killall)
            node = await self.remote(lb.name)
            await node.put(text, Layout().keepalived_conf, sudo=True)
            # Kubitect has no exit hook and no real-time keepalived: take ours away.
            drop = " ".join(shlex.quote(p) for p in Layout().dropins)
            await self.root(lb.name, f"rm -f {drop} && systemctl daemon-reload")

    # ------------------------------------------------------------------ faults

    async def bridge_port(self, name: str) -> str:
        """The node's port on the lab bridge (host side), found by name."""
        if self.kind == "nspawn":
            links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                              check=True).stdout)
            want = f"vb-{name}"
            for link in links:
                if link.get("ifname") == want or want in link.get("altnames", []):
                    return link["ifname"]
            raise LookupError(f"no bridge port of {name}")
        out = subprocess.run(["virsh", "-c", "qemu:///system", "domiflist", name], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines()[2:]:
            parts = line.split()
            if parts and parts[0].startswith("vnet"):
                return parts[0]
        raise LookupError(f"no interface of domain {name}: {out}")

    def _port(self, port: str, up: bool) -> None:
        subprocess.run(["ip", "link", "set", "dev", port, "up" if up else "down"], check=True)

    def _nspawn_init(self, name: str) -> int:
        """The container's init (PID 1 of its PID namespace), as seen from here."""
        from kubitect_plugins.nspawn.host import cluster_id, find_nodes, leader_of

        from kubitect_core.paths import cluster_dir

        pid = find_nodes(cluster_id(cluster_dir(self.home, self.cluster))).get(name)
        leader = leader_of(pid) if pid else None
        if not leader:
            raise LookupError(f"no running container for {name}")
        return leader

    async def prepare(self, fault: str, holder: str) -> dict:
        """What a fault needs before the prober starts; returns what inject/restore need."""
        ctx: dict[str, Any] = {}
        if fault == "haproxy_killed":
            await self.root(holder, f"mkdir -p {os.path.dirname(NOT_RESTARTING)} && "
                                    f"printf '[Service]\\nRestart=no\\n' > {NOT_RESTARTING} && systemctl daemon-reload")
        if fault in ("link_cut", "host_lost"):
            ctx["port"] = await self.bridge_port(holder)
        if fault == "host_lost" and self.kind == "nspawn":
            ctx["init"] = self._nspawn_init(holder)
        return ctx

    async def inject(self, fault: str, holder: str, ctx: dict) -> None:
        if fault == "keepalived_stopped":
            await self.root(holder, "systemctl stop keepalived")
        elif fault == "haproxy_killed":
            await self.root(holder, kill_group("haproxy"))
        elif fault == "keepalived_crashed":
            await self.root(holder, kill_group("keepalived"))
        elif fault == "link_cut":
            self._port(ctx["port"], up=False)
        elif fault == "host_lost":
            self._port(ctx["port"], up=False)
            if self.kind == "nspawn":
                os.kill(ctx["init"], signal.SIGKILL)
            else:
                subprocess.run(["virsh", "-c", "qemu:///system", "destroy", holder], check=True,
                               capture_output=True)
            self.forget(holder)
        else:
            raise ValueError(fault)

    async def restore(self, fault: str, holder: str, ctx: dict) -> None:
        if fault == "keepalived_stopped":
            await self.root(holder, "systemctl start keepalived")
        elif fault == "haproxy_killed":
            await self.root(holder, f"rm -f {NOT_RESTARTING} && systemctl daemon-reload && "
                                    "systemctl reset-failed haproxy; systemctl start haproxy")
        elif fault == "keepalived_crashed":
            await self.root(holder, "systemctl reset-failed keepalived; systemctl start keepalived")
        elif fault == "link_cut":
            self._port(ctx["port"], up=True)
        elif fault == "host_lost":
            await self.revive(holder)

    async def revive(self, name: str) -> None:
        """A lost machine boots again and is configured by kubitect (plus the config under test)."""
        self.forget(name)
        if self.kind == "nspawn":  # the container is gone for good; wait for its systemd-nspawn to exit
            await asyncio.sleep(1.0)
        await self.stages("vms", "loadbalancers")
        if self.config_name == "kubitect":  # the stage put the plugin's files back everywhere
            await self.use("kubitect")

    # ------------------------------------------------------------------ measuring

    async def probe(self, inject, *, min_seconds: float, max_seconds: float) -> Probed:
        """Runs the three VIP clients (kubitect_core.failover_streams) in a child process, calls
        `inject()` once every one answers, returns their result."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubitect_core.failover_streams", self.vip, "--min-seconds", f"{min_seconds:g}",
            "--max-seconds", f"{max_seconds:g}", "--fresh-target", self.fresh_target, "--wait-go",
            "--interval", f"{self.interval:g}",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), 30)
            if first.decode().strip() != "ready":
                err = await proc.stderr.read()
                raise RuntimeError(f"the prober did not start: {first!r} {err.decode()[-800:]}")
            await asyncio.sleep(0.3)  # a baseline of answers before the fault
            before = time.monotonic()
            await inject()
            injected = time.monotonic()
            out, err = await asyncio.wait_for(proc.communicate(b"go\n"), max_seconds + 30)
            if proc.returncode:
                log = self.home / f"prober-failed-{time.time():.0f}.log"
                log.write_bytes(err)
                raise RuntimeError(f"the prober failed (exit {proc.returncode}; stderr in {log}): "
                                   f"{err.decode()[-600:]}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"the prober printed no result: {err.decode()[-800:]}")
        return Probed(json.loads(lines[-1]), before, injected, injected - before)
