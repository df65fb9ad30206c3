"""Namespace lab for the load balancer plugin: a switch, two load balancers, three masters, a client.

Everything lives in network namespaces named `kbt4-<random>-<host>` on a /24 that exists only
inside them (test-labs.md 0-1). The root namespace is never changed: veth pairs are created with
both ends inside lab namespaces, sysctls are set through `ip netns exec`. Every process the lab
starts carries the environment marker KBT4_LAB=<lab id> and is stopped by PID; `down()` also
sweeps processes left in deleted namespaces by that marker. The masters run a stand-in API
server (a test double for kube-apiserver, which cannot be installed here: no internet): a threaded
TLS server answering GET /readyz with 200 and its own name.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kubitect_plugins.keepalived_haproxy.render import ForwardPort, Layout, render_node
from kubitect_plugins.keepalived_haproxy.settings import VrrpSettings
from sshd_lab import marked_pids

from kubitect_core.topology import Node, Topology

PREFIX = "kbt4"
MARKER = "KBT4_LAB"
RUN_ROOT = Path("/run")

STANDIN_API = r'''
"""Stand-in kube-apiserver (test double): TLS, GET /readyz -> 200 and the server's name.

Keeps the connection open for the next request unless the client says `Connection: close`
(HTTP/1.1 keep-alive, as the real API server does for kubectl and kubelets).
"""
import socketserver, ssl, sys
name, cert, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        try:
            conn = ctx.wrap_socket(self.request, server_side=True)  # handshake in this thread
            conn.settimeout(900)  # an idle keep-alive client may wait long between requests
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                parts = head.split(b"\r\n", 1)[0].split()
                path = parts[1] if len(parts) > 1 else b"/"
                close = b"connection: close" in head.lower()
                ok = path.split(b"?")[0] in (b"/readyz", b"/healthz", b"/livez")
                body = (name if ok else "not found").encode()
                status = b"200 OK" if ok else b"404 Not Found"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\nConnection: " + (b"close" if close else b"keep-alive")
                             + b"\r\n\r\n" + body)
                if close:
                    return
        except (OSError, ssl.SSLError):
            pass

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 256

Server(("0.0.0.0", port), Handler).serve_forever()
'''


def is_root() -> bool:
    """Namespaces, bridges and daemons binding port 6443 need root."""
    return os.geteuid() == 0


def missing_binaries() -> list[str]:
    """What the lab needs on PATH; tests skip naming what is missing."""
    return [b for b in ("ip", "keepalived", "haproxy", "openssl", "bash") if shutil.which(b) is None]


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class NamespaceLab:
    """A set of namespaces on one bridge; hosts maps a short name to its address on the lab /24."""

    hosts: dict[str, str]
    subnet_prefix: int = 24
    lab_id: str = field(default_factory=lambda: f"{PREFIX}-{secrets.token_hex(3)}")
    pids: list[int] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return RUN_ROOT / self.lab_id

    @property
    def switch(self) -> str:
        return f"{self.lab_id}-sw"

    def ns(self, host: str) -> str:
        """The namespace name of a lab host."""
        return f"{self.lab_id}-{host}"

    def up(self) -> None:
        """Create the switch and every host; stale labs of crashed runs are removed first."""
        sweep_stale()
        self.workdir.mkdir(mode=0o755)
        (self.workdir / "owner").write_text(str(os.getpid()))
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host, ip in self.hosts.items():
            ns = self.ns(host)
            _run("ip", "netns", "add", ns)
            port = f"p-{host}"
            _run("ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
            _run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{ip}/{self.subnet_prefix}", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def exec(self, host: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside a host's namespace and wait for it."""
        return _run("ip", "netns", "exec", self.ns(host), *cmd, check=check)

    def spawn(self, host: str, *cmd: str, log: str) -> subprocess.Popen:
        """Start a long-running process in a host's namespace, in its own process group, marked."""
        env = dict(os.environ, **{MARKER: self.lab_id})
        out = open(self.workdir / log, "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        out.close()
        self.pids.append(proc.pid)
        return proc

    def link(self, host: str, up: bool) -> None:
        """Cut or restore a host's cable: its switch port goes down (the host's NIC loses carrier)."""
        _run("ip", "-n", self.switch, "link", "set", f"p-{host}", "up" if up else "down")

    def down(self) -> None:
        """Stop every lab process by PID, delete the namespaces, sweep marked leftovers."""
        teardown(self.lab_id, self.pids, [self.switch, *(self.ns(h) for h in self.hosts)])


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def teardown(lab_id: str, pids: list[int], namespaces: list[str]) -> None:
    """Kill by PID (and process group), then whatever each namespace holds, then delete them."""
    for pid in pids:
        _kill_group(pid)
    for ns in namespaces:
        res = _run("ip", "netns", "pids", ns, check=False)
        for pid in res.stdout.split():
            _kill_group(int(pid))
    for pid in marked_pids(lab_id, env=MARKER):
        _kill_group(pid)
    for ns in namespaces:
        _run("ip", "netns", "del", ns, check=False)
    shutil.rmtree(RUN_ROOT / lab_id, ignore_errors=True)
    for pid in pids:  # reap our children
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def sweep_stale() -> None:
    """Remove labs whose owning test process is gone (a crashed or killed earlier run)."""
    for workdir in RUN_ROOT.glob(f"{PREFIX}-*"):
        owner = workdir / "owner"
        try:
            alive = Path(f"/proc/{int(owner.read_text())}").exists()
        except (OSError, ValueError):
            alive = False
        if alive:
            continue
        lab_id = workdir.name
        listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
        names = [line.split()[0] for line in listed if line.startswith(f"{lab_id}-")]
        teardown(lab_id, [], names)


# --------------------------------------------------------------------------------------------------
# The load balancer lab: two LBs with the plugin's rendered configs, three stand-in masters.


SUBNET = "10.77.0"
LB_HOSTS = {"lb1": f"{SUBNET}.11", "lb2": f"{SUBNET}.12", "m1": f"{SUBNET}.21", "m2": f"{SUBNET}.22",
            "m3": f"{SUBNET}.23", "cl": f"{SUBNET}.100"}
VIP = f"{SUBNET}.200"
NIC = "eth0"


def lab_topology(cluster: str = "kbt4", priorities: tuple[int, int] = (200, 100), vip: str | None = VIP,
                 lbs: int = 2) -> Topology:
    """The Topology the plugin would see for the lab: lb1 (priority 200) is the preferred holder."""
    def node(role: str, short: str, priority: int | None = None) -> Node:
        return Node(role=role, id=short, name=short, host="lab", ip=LB_HOSTS[short], mac=None, cpu=1,
                    ram_gib=1, main_disk_gib=1, priority=priority)
    nodes = [node("lb", f"lb{i + 1}", priorities[i]) for i in range(lbs)]
    nodes += [node("master", m) for m in ("m1", "m2", "m3")]
    return Topology(cluster=cluster, nodes=tuple(nodes), vip=vip, endpoint=vip or LB_HOSTS["lb1"],
                    virtual_router_id=77)


@dataclass
class LbLab:
    """Drives the plugin's render -> validate -> start path on namespace hosts with real daemons."""

    vrrp: VrrpSettings = field(default_factory=VrrpSettings)
    forward_ports: tuple[ForwardPort, ...] = ()
    lab: NamespaceLab = field(default_factory=lambda: NamespaceLab(dict(LB_HOSTS)))
    topology: Topology = field(default_factory=lab_topology)
    haproxy: dict[str, subprocess.Popen] = field(default_factory=dict)
    keepalived: dict[str, subprocess.Popen] = field(default_factory=dict)
    apis: dict[str, subprocess.Popen] = field(default_factory=dict)  # stand-in API servers

    def layout(self, lb: str) -> Layout:
        """Per-LB private paths, so two HAProxies and keepalivds on one machine never collide."""
        d = self.lab.workdir / lb
        return Layout(haproxy_cfg=str(d / "haproxy.cfg"), keepalived_conf=str(d / "keepalived.conf"),
                      check_script=str(d / "check_haproxy.sh"), stats_socket=str(d / "admin.sock"),
                      haproxy_dropin=str(d / "haproxy-exit.conf"), haproxy_down_file=str(d / "haproxy.down"),
                      keepalived_dropin=str(d / "keepalived-realtime.conf"))

    @property
    def lbs(self) -> list[str]:
        return [n.name for n in self.topology.load_balancers]

    def up(self) -> None:
        """Namespaces, stand-in masters, rendered + validated configs, HAProxy and keepalived."""
        self.lab.up()
        self._standin_masters()
        for node in self.topology.load_balancers:
            self.lab.exec(node.name, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")
            self.write_configs(node.name)
            self.validate(node.name)
            self.start_haproxy(node.name)
        if self.topology.vip:
            for lb in self.lbs:
                self.start_keepalived(lb)

    def down(self) -> None:
        self.lab.down()

    def _standin_masters(self) -> None:
        wd = self.lab.workdir
        key, crt = wd / "api.key", wd / "api.crt"
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=kbt4-standin")
        key.chmod(0o600)
        script = wd / "standin_api.py"
        script.write_text(STANDIN_API)
        for m in self.topology.masters:
            self.apis[m.name] = self.lab.spawn(m.name, sys.executable, str(script), m.name, str(crt), str(key), "6443",
                           log=f"{m.name}-api.log")
        for m in self.topology.masters:
            wait_for(lambda m=m: self.lab.exec(m.name, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/6443",
                                               check=False).returncode == 0, 5, f"stand-in API on {m.name}")

    def write_configs(self, lb: str) -> dict[str, str]:
        """Render this LB's files with the plugin and write them to its private paths."""
        layout = self.layout(lb)
        Path(layout.haproxy_cfg).parent.mkdir(mode=0o755, exist_ok=True)
        node = next(n for n in self.topology.load_balancers if n.name == lb)
        rendered = render_node(self.topology, node, NIC, self.forward_ports, self.vrrp, layout)
        for path, text in rendered.files.items():
            Path(path).write_text(text)
            Path(path).chmod(0o755 if path == layout.check_script else 0o644)
        return rendered.files

    def validate(self, lb: str) -> None:
        """The same checks the plugin runs before a config goes live."""
        layout = self.layout(lb)
        self.lab.exec(lb, "haproxy", "-c", "-q", "-f", layout.haproxy_cfg)
        if self.topology.vip:
            self.lab.exec(lb, "keepalived", "-t", "-f", layout.keepalived_conf)

    def start_haproxy(self, lb: str) -> None:
        self.haproxy[lb] = self.lab.spawn(lb, "haproxy", "-db", "-f", self.layout(lb).haproxy_cfg,
                                          log=f"{lb}-haproxy.log")
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{self.layout(lb).health_port}"
        wait_for(lambda: self.lab.exec(lb, "bash", "-c", probe, check=False).returncode == 0,
                 5, f"HAProxy health endpoint on {lb} (log: {self.log(f'{lb}-haproxy.log')})")

    def start_keepalived(self, lb: str) -> None:
        """Start keepalived with this LB's own pid files.

        Pid files left by a crashed instance are removed first: its VRRP child may linger as an
        unreaped zombie here (PID 1 is not an init), and keepalived would then print "daemon is
        already running" and exit 0 - the silent failure test-labs.md warns about.
        """
        assert lb not in self.keepalived, f"keepalived already runs on {lb}"
        d = Path(self.layout(lb).keepalived_conf).parent
        for pidfile in ("keepalived.pid", "vrrp.pid", "checkers.pid"):
            (d / pidfile).unlink(missing_ok=True)
        self.keepalived[lb] = self.lab.spawn(
            lb, "keepalived", "-n", "-l", "-D", "-P", "-f", str(d / "keepalived.conf"),
            "-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid"), "-c", str(d / "checkers.pid"),
            log=f"{lb}-keepalived.log")
        time.sleep(0.2)
        if self.keepalived[lb].poll() is not None:
            raise RuntimeError(f"keepalived on {lb} exited at once: {self.log(f'{lb}-keepalived.log')}")

    def kill_haproxy(self, lb: str) -> None:
        """Fault (b): HAProxy dies (SIGKILL); keepalived must notice through the health check."""
        _signal(self.haproxy.pop(lb), signal.SIGKILL, group=False)

    def stop_keepalived(self, lb: str) -> None:
        """Fault (a): graceful stop (SIGTERM to the parent): a priority-0 advert hands over."""
        _signal(self.keepalived.pop(lb), signal.SIGTERM, group=False)

    def crash_keepalived(self, lb: str) -> None:
        """Fault: keepalived crashes (SIGKILL of its whole process group): no goodbye advert."""
        _signal(self.keepalived.pop(lb), signal.SIGKILL, group=True)

    def cut_link(self, lb: str) -> None:
        """Fault (c): the holder's cable is cut."""
        self.lab.link(lb, up=False)

    def restore_link(self, lb: str) -> None:
        self.lab.link(lb, up=True)

    def holders(self) -> list[str]:
        """LBs whose NIC carries the VIP (a cut-off old holder may still claim it)."""
        out = []
        for lb in self.lbs:
            res = self.lab.exec(lb, "ip", "-4", "-o", "addr", "show", "dev", NIC, check=False)
            if f" {self.topology.vip}/" in res.stdout:
                out.append(lb)
        return out

    def answering_holder(self) -> str | None:
        """The LB that answers for the VIP as the client sees it (kubitect_core.failover.holder)."""
        res = self.lab.exec("cl", sys.executable, "-m", "kubitect_core.failover", "holder",
                            str(self.topology.vip), "--port", str(Layout().whoami_port), check=False)
        return res.stdout.strip() or None

    def vrrp_state(self, lb: str) -> str:
        """The last VRRP state keepalived logged on `lb` (MASTER, BACKUP, FAULT, ...)."""
        states = re.findall(r"Entering ([A-Z]+) STATE", self.log(f"{lb}-keepalived.log"))
        return states[-1] if states else "UNKNOWN"

    def settled_holder(self, timeout: float = 15.0) -> str:
        """Waits until exactly one LB holds the VIP and answers for it (whichever) and every other
        one is in BACKUP, able to take over; returns the holder."""
        found: list[str] = []

        def single() -> bool:
            found[:] = self.holders()
            return (len(found) == 1 and self.answering_holder() == found[0]
                    and all(self.vrrp_state(lb) == "BACKUP" for lb in self.lbs if lb != found[0]))

        wait_for(single, timeout, "exactly one VIP holder that answers")
        return found[0]

    def wait_holder(self, lb: str, timeout: float = 15.0) -> None:
        """Wait until exactly `lb` holds the VIP and answers for it (the settled state)."""
        wait_for(lambda: self.holders() == [lb] and self.answering_holder() == lb, timeout,
                 f"{lb} as the only VIP holder (holders now: {self.holders()})")

    def measure(self, inject: Callable[[], None], *, max_seconds: float = 15.0,
                quiet: float | None = None) -> dict:
        """Run the prober in the client namespace, inject the fault once it sees the API, return its JSON."""
        env = dict(os.environ, **{MARKER: self.lab.lab_id})
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns("cl"), sys.executable, "-m", "kubitect_core.failover",
             "probe", str(self.topology.vip), "--max-seconds", str(max_seconds),
             *(["--quiet", str(quiet)] if quiet is not None else [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.lab.pids.append(proc.pid)
        try:
            first = proc.stdout.readline().strip()
            if first != "ready":
                raise RuntimeError(f"prober did not start: {first!r} {proc.stderr.read()}")
            time.sleep(0.2)  # a baseline of successes before the fault
            inject()
            out, err = proc.communicate(timeout=max_seconds + 10)
        finally:
            if proc.poll() is None:
                _signal(proc, signal.SIGKILL, group=True)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"prober printed no result: {out!r} {err!r}")
        return json.loads(lines[-1])

    def log(self, name: str) -> str:
        """A daemon's log, for assertion messages."""
        path = self.lab.workdir / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _signal(proc: subprocess.Popen, sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.wait(timeout=5)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll until cond() holds; the error says what never became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def with_settings(lab: LbLab, **changes: object) -> LbLab:
    """A lab like `lab` with other VRRP settings (for benchmarks)."""
    return replace(lab, vrrp=lab.vrrp.model_copy(update=changes))
