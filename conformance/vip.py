"""The VIP as a client sees it: who holds it, whether the API answers through it, measured gaps.

The vantage point (where the prober runs) is a node outside the load balancers (the nodes that
serve the endpoint; with the VIP on the masters, those masters): the first worker, else the
first other master. That is where the API's real clients sit (kubelets, kube-proxy,
pods) and it is always on the node network, with the same ARP view of the VIP; the machine
kubitect runs on may be another host, behind NAT, or off the node network entirely, so it is
used only when asked for (`--failover-vantage local`) or when no non-LB node can run the prober.
The prober is `kubitect_core.failover` (stdlib only), uploaded to the vantage node as one file.

Who holds the VIP is judged by who answers, when the implementation records a `whoami_port`
(keepalived-haproxy's frontend on VIP:8405 names the node the client's traffic reaches), and by
`ip addr` alone otherwise. `ip addr` on each load
balancer is checked as well, but alone it lies: a crashed holder keeps the address on its NIC
while the backup holds it too (test-labs.md 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubitect_core import failover

from .cluster import API_PORT, ClusterHost, SshControl

REMOTE_DIR = "/tmp/kubitect-conformance"
REMOTE_PROBER = f"{REMOTE_DIR}/kubitect_prober.py"


@dataclass(frozen=True)
class Target:
    """What the prober requests through the VIP."""

    port: int
    path: str
    tls: bool
    label: str

    def args(self) -> list[str]:
        return ["--port", str(self.port), "--path", self.path, *([] if self.tls else ["--plain"])]


def api_target(port: int = API_PORT) -> Target:
    """TLS GET /readyz through VIP:port: the API as its clients reach it."""
    return Target(port, "/readyz", True, f"TLS GET /readyz on VIP:{port} (the API)")


def whoami_target(port: int) -> Target:
    """HTTP GET / on the implementation's whoami port: the VIP without an API server behind it."""
    return Target(port, "/", False, f"HTTP GET / on VIP:{port} (the load balancer's whoami; no API server "
                                    "behind the VIP)")


API_TARGET = api_target(API_PORT)


class Vantage:
    """Runs the prober and holder queries from one place outside the load balancers."""

    def __init__(self, control: SshControl | None, node: ClusterHost | None, why: str = "",
                 whoami_port: int | None = None) -> None:
        self.control, self.node, self.why = control, node, why
        self.whoami_port = whoami_port  # None: the implementation names no holder; judged by `ip addr`

    @property
    def name(self) -> str:
        return self.node.name if self.node else "local (the machine running kubitect)"

    def install(self) -> str | None:
        """Uploads the prober to the vantage node; returns why it cannot run there, or None."""
        if self.node is None:
            return None
        assert self.control is not None
        if self.node.run("command -v python3").rc != 0:
            return f"{self.node.name} has no python3 to run the prober"
        src = Path(failover.__file__).read_bytes()
        res = self.control.run(self.node.name, f"mkdir -p {REMOTE_DIR} && cat > {REMOTE_PROBER}", input=src)
        if res.returncode != 0:
            return f"uploading the prober to {self.node.name} failed: {res.stderr.decode(errors='replace')}"
        return None

    def _code_argv(self, code: str, *args: str) -> list[str]:
        """argv running `code` with the prober importable as `p`, locally or on the vantage node."""
        if self.node is None:
            return [sys.executable, "-c", "import kubitect_core.failover as p\n" + code, *args]
        assert self.control is not None
        prelude = f"import sys; sys.path.insert(0, {REMOTE_DIR!r}); import kubitect_prober as p\n"
        return self.control.argv(self.node.name, " ".join(["python3", "-c", _q(prelude + code), *args]))

    def _python(self, code: str, timeout: float = 10) -> str:
        """Runs a snippet at the vantage point (prober as `p`, asyncio imported); its stdout."""
        res = subprocess.run(self._code_argv("import asyncio\n" + code), capture_output=True, text=True,
                             timeout=timeout)
        return res.stdout.strip()

    def holder(self, vip: str) -> str | None:
        """The node that answers for the VIP (the whoami port), None if nobody does or none is known."""
        if self.whoami_port is None:
            return None
        out = self._python(f"print(asyncio.run(p.holder({vip!r}, {self.whoami_port})) or '')")
        return out or None

    def readyz(self, host: str, port: int = API_PORT, timeout: float = 2.0) -> tuple[bool, str]:
        """One TLS GET /readyz through host:port: (HTTP 200, body or error)."""
        out = self._python(f"import json; print(json.dumps(asyncio.run(p.readyz({host!r}, {port}, "
                           f"timeout={timeout}))))", timeout=timeout + 10)
        try:
            ok, detail = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            return False, f"no answer from the vantage point ({out[-200:]!r})"
        return bool(ok), str(detail)

    def probe(self, vip: str, inject: Any, *, target: Target = API_TARGET, max_seconds: float = 15.0,
              quiet: float | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
        """Starts the prober, calls `inject()` once it sees the target, returns the prober's JSON result.

        The prober marks the fault when told (just before `inject()`), and watches at least
        `min_seconds` after `inject()` returned (for faults that take effect after a delay).
        """
        args = ["probe", vip, *target.args(), "--max-seconds", str(max_seconds), "--go-on-stdin",
                "--min-seconds", str(min_seconds)]
        if quiet is not None:
            args += ["--quiet", str(quiet)]
        code = "import sys\nsys.exit(p.main(sys.argv[1:]))\n"
        proc = subprocess.Popen(self._code_argv(code, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.PIPE, text=True, start_new_session=True)
        try:
            first = proc.stdout.readline().strip() if proc.stdout else ""
            if first != "ready":
                proc.kill()
                raise RuntimeError(f"the prober at {self.name} did not see {vip}:{target.port} answer before "
                                   f"the fault: {first!r} {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)  # a baseline of successes before the fault
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            inject()
            proc.stdin.write("injected\n")  # min_seconds count from here
            proc.stdin.flush()
            out, err = proc.communicate(timeout=max_seconds + 15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"the prober at {self.name} printed no result: {out!r} {err!r}")
        return json.loads(lines[-1])


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def choose_vantage(control: SshControl, hosts: list[ClusterHost], wanted: str | None,
                   serving: list[str] | None = None, whoami_port: int | None = None) -> Vantage:
    """The vantage point, with why it was chosen (`wanted`: a node name, "local", or None = auto).

    `serving`: the nodes that serve the endpoint (never a vantage point unless asked for: a fault
    on the holder would take the prober with it). `whoami_port`: see `Vantage`.
    """
    if wanted == "local":
        return Vantage(None, None, "asked for (--failover-vantage local)", whoami_port)
    busy = set(serving or [])
    outside = [h for role in ("worker", "master") for h in hosts if h.role == role and h.name not in busy]
    if wanted:
        outside = [h for h in hosts if h.name == wanted]
        if not outside:
            raise LookupError(f"--failover-vantage {wanted}: no such node")
    reasons = []
    for h in outside:
        v = Vantage(control, h, f"a {h.role} outside the load balancers", whoami_port)
        problem = v.install()
        if problem is None:
            return v
        reasons.append(problem)
    return Vantage(None, None, "no node outside the load balancers can run the prober (" +
                   ("; ".join(reasons) or "there are no masters or workers") + ")", whoami_port)


# --------------------------------------------------------------------------- holders


def address_holders(lbs: list[ClusterHost], vip: str) -> list[str]:
    """Load balancers whose interfaces carry the VIP right now (a crashed holder may still)."""
    out = []
    for lb in lbs:
        res = lb.root("ip -4 -o addr show")
        if f" {vip}/" in res.stdout:
            out.append(lb.name)
    return out


@dataclass
class HolderState:
    by_address: list[str]
    answering: str | None
    # False when the implementation names no holder (no whoami port): `ip addr` alone decides.
    by_answer: bool = True

    @property
    def single(self) -> str | None:
        """The holder when exactly one node carries the VIP (and, when known, it is the one answering)."""
        if len(self.by_address) == 1 and (not self.by_answer or self.answering == self.by_address[0]):
            return self.by_address[0]
        return None

    def describe(self) -> str:
        answering = f"answering: {self.answering or 'nobody'}" if self.by_answer else "no whoami port to ask"
        return f"VIP on {', '.join(self.by_address) or 'no load balancer'} (ip addr), {answering}"


def holder_state(lbs: list[ClusterHost], vantage: Vantage, vip: str) -> HolderState:
    by_answer = vantage.whoami_port is not None
    addresses = address_holders(lbs, vip)
    answering = vantage.holder(vip) if by_answer else (addresses[0] if len(addresses) == 1 else None)
    return HolderState(addresses, answering, by_answer)


def wait_single_holder(lbs: list[ClusterHost], vantage: Vantage, vip: str, timeout: float,
                       expected: str | None = None) -> HolderState:
    """Polls until exactly one LB holds and answers for the VIP (and it is `expected`, if given)."""
    deadline = time.monotonic() + timeout
    state = holder_state(lbs, vantage, vip)
    while time.monotonic() < deadline:
        if state.single and (expected is None or state.single == expected):
            return state
        time.sleep(0.2)
        state = holder_state(lbs, vantage, vip)
    return state


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """A gap the load balancer allows, with the arithmetic that produced it (shown in reports)."""

    ms: float
    formula: str


def declared_budget(declared: dict[str, Any], case: str, margin_s: float) -> Budget | None:
    """The budget the implementation declares for `case` (its record's `failover.budgets`) plus the
    suite's margin; None when it declares none for that case."""
    entry = (declared.get("budgets") or {}).get(case)
    if not entry:
        return None
    return Budget(round(float(entry["ms"]) + margin_s * 1000, 1), f"{entry['formula']} + {margin_s:g} margin")
