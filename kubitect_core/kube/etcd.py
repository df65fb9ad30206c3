"""etcd on a control-plane node, through `etcdctl` run over the remote layer.

Why a wrapper and not a client library: the etcd that matters is the one on the nodes, reachable
only there with the client certificates kubeadm wrote (`/etc/kubernetes/pki/etcd/`); running
`etcdctl` on a master needs no tunnel and no extra port through the load balancers. Every call
names the endpoint and the three TLS files explicitly, so nothing depends on the node's
environment. JSON output (`-w json`) is parsed; member IDs are printed by etcd as decimal in
JSON and taken as hex by `member remove`, so `Member.hex_id` is what commands use.

On a kubeadm node etcd runs as a static pod, and `etcdctl` may be absent from the host: then the
command runs inside the etcd container (`crictl exec`), whose mounts include the PKI directory
and `/var/lib/etcd`, which is why snapshots are written there first and then moved.

Quorum arithmetic is pure (`Quorum`, `removal_verdict`) so the refusals are unit-tested with the
numbers a user sees: members, healthy, needed.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from dataclasses import dataclass, field

from kubitect_core.remote import Remote, RemoteError
from kubitect_core.stage import StageError

CLIENT_PORT = 2379
PEER_PORT = 2380
DATA_DIR = "/var/lib/etcd"
SNAPSHOT_NAME = "kubitect-snapshot.db.tmp"  # written under the data dir: the etcd pod's hostPath mount
ADD_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class EtcdTls:
    """Where etcdctl connects and with which client certificate (kubeadm's by default)."""

    endpoint: str = f"https://127.0.0.1:{CLIENT_PORT}"
    cacert: str = "/etc/kubernetes/pki/etcd/ca.crt"
    cert: str = "/etc/kubernetes/pki/etcd/healthcheck-client.crt"
    key: str = "/etc/kubernetes/pki/etcd/healthcheck-client.key"

    def flags(self, endpoints: str | None = None) -> str:
        return " ".join([
            f"--endpoints={shlex.quote(endpoints or self.endpoint)}",
            f"--cacert={shlex.quote(self.cacert)}",
            f"--cert={shlex.quote(self.cert)}",
            f"--key={shlex.quote(self.key)}",
            "--command-timeout=15s", "--dial-timeout=5s",
        ])


KUBEADM = EtcdTls()
K3S = EtcdTls(cacert="/var/lib/rancher/k3s/server/tls/etcd/server-ca.crt",
              cert="/var/lib/rancher/k3s/server/tls/etcd/client.crt",
              key="/var/lib/rancher/k3s/server/tls/etcd/client.key")

# etcdctl on the host, else inside the running etcd container (a kubeadm static pod).
_ETCDCTL = (
    'if command -v etcdctl >/dev/null 2>&1; then E="env ETCDCTL_API=3 etcdctl"; '
    "else c=$(crictl ps -q --state running --name '^etcd$' 2>/dev/null | head -n1); "
    '[ -n "$c" ] || { echo "neither etcdctl nor a running etcd container on this node" >&2; exit 127; }; '
    'E="crictl exec $c env ETCDCTL_API=3 etcdctl"; fi; $E'
)


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    @property
    def hex_id(self) -> str:
        return format(self.id, "x")

    @property
    def started(self) -> bool:
        """A member added but never started has no name and no client URLs yet."""
        return bool(self.name)

    @classmethod
    def from_json(cls, data: dict) -> Member:
        return cls(int(data["ID"]), str(data.get("name", "")), tuple(data.get("peerURLs") or ()),
                   tuple(data.get("clientURLs") or ()), bool(data.get("isLearner", False)))


@dataclass(frozen=True)
class Quorum:
    """The health of the cluster in the numbers a refusal names."""

    members: int
    healthy: int
    unhealthy: tuple[str, ...] = field(default=())

    @property
    def needed(self) -> int:
        return self.members // 2 + 1

    @property
    def ok(self) -> bool:
        return self.members > 0 and self.healthy >= self.needed

    @property
    def tolerates(self) -> int:
        """How many more members may fail before quorum is lost."""
        return max(0, self.healthy - self.needed)

    def __str__(self) -> str:
        text = f"members {self.members}, healthy {self.healthy}, needed {self.needed}"
        return text + (f" (unhealthy: {', '.join(self.unhealthy)})" if self.unhealthy else "")


def removal_verdict(before: Quorum, *, leaving_healthy: bool) -> str | None:
    """None when removing one member is safe, else why not, with the numbers.

    Safe means: the cluster has quorum now (the removal itself is a write that needs it), and
    after the removal the remaining healthy members still reach the smaller cluster's quorum.
    The last member is never removed.
    """
    if before.members <= 1:
        return f"etcd would be left without members ({before}); the last control plane cannot be removed"
    if not before.ok:
        return f"etcd has no quorum now ({before}); fix the unhealthy members before removing one"
    after = Quorum(before.members - 1, before.healthy - (1 if leaving_healthy else 0))
    if not after.ok:
        return f"removing it would lose etcd quorum: before {before}; after {after}"
    return None


def addition_verdict(before: Quorum) -> str | None:
    """None when adding one member is safe: the added member counts as down until it has started.

    Mirrors etcd's own strict reconfiguration check, with its one exception: a cluster of one may
    grow to two (quorum is then briefly lost until the new member starts; kubeadm does the same).
    """
    if not before.ok:
        return f"etcd has no quorum now ({before}); a member cannot be added"
    after = Quorum(before.members + 1, before.healthy)
    if not after.ok and (before.members, before.healthy) != (1, 1):
        return f"adding a member before it starts would lose etcd quorum: before {before}; after {after}"
    return None


async def etcdctl(r: Remote, args: str, *, tls: EtcdTls = KUBEADM, endpoints: str | None = None,
                  check: bool = True, timeout: float = 60) -> str:
    """Runs `etcdctl <args>` on the node as root and returns stdout (args are already quoted)."""
    result = await r.run(f"{_ETCDCTL} {tls.flags(endpoints)} {args}", sudo=True, check=check, timeout=timeout)
    return result.stdout if check else result.stdout + result.stderr


def _json(text: str, what: str, r: Remote) -> object:
    try:
        return json.loads(text)
    except ValueError:
        raise RemoteError(f"{r.label}: etcdctl {what} printed no JSON: {text.strip()[:200]!r}") from None


async def member_list(r: Remote, *, tls: EtcdTls = KUBEADM) -> list[Member]:
    """Every member (started or not) as etcd's Raft log knows it."""
    data = _json(await etcdctl(r, "member list -w json", tls=tls), "member list", r)
    return [Member.from_json(m) for m in (data.get("members") or [])]  # type: ignore[union-attr]


def peer_url(ip: str) -> str:
    return f"https://{ip}:{PEER_PORT}"


def client_url(ip: str) -> str:
    return f"https://{ip}:{CLIENT_PORT}"


@dataclass(frozen=True)
class Added:
    """A member just added, and the `--initial-cluster` the new etcd must start with."""

    member: Member
    initial_cluster: str


async def member_add(r: Remote, name: str, peer: str, *, tls: EtcdTls = KUBEADM) -> Added:
    """Adds a member; the new node must then start etcd with `initial_cluster`, state 'existing'.

    Quorum is checked first (`addition_verdict`): until the new member starts it counts as down.
    """
    verdict = addition_verdict(await endpoint_health(r, tls=tls))
    if verdict:
        raise StageError(f"cannot add etcd member {name}: {verdict}")
    args = f"member add {shlex.quote(name)} --peer-urls={shlex.quote(peer)} -w json"
    deadline = time.monotonic() + ADD_RETRY_SECONDS
    while True:  # etcd refuses a reconfiguration until every member has been connected for 5 s
        try:
            out = await etcdctl(r, args, tls=tls)
            break
        except RemoteError as exc:
            if "unhealthy cluster" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)  # etcd allows it 5 s after the last member connected: don't overshoot by 1 s
    data = _json(out, "member add", r)
    new = Member.from_json(data["member"])  # type: ignore[index]
    pairs = []
    for m in data.get("members") or []:  # type: ignore[union-attr]
        member = Member.from_json(m)
        for url in member.peer_urls:
            pairs.append(f"{name if member.id == new.id else member.name}={url}")
    return Added(new, ",".join(pairs))


async def member_remove(r: Remote, member: Member | int | str, *, tls: EtcdTls = KUBEADM) -> None:
    """Removes a member by Member, ID, or name (no-op when a named member is already gone)."""
    if isinstance(member, str):
        found = [m for m in await member_list(r, tls=tls) if m.name == member]
        if not found:
            return
        member = found[0]
    member_id = member.hex_id if isinstance(member, Member) else format(member, "x")
    await etcdctl(r, f"member remove {member_id}", tls=tls)


async def endpoint_health(r: Remote, *, tls: EtcdTls = KUBEADM) -> Quorum:
    """Quorum as the members answer it: every member's client URL is asked for its health.

    A member added but not started (no client URL) counts as a member that is not healthy,
    as it does for Raft.
    """
    members = await member_list(r, tls=tls)
    urls = [u for m in members for u in m.client_urls[:1]]
    if not urls:
        return Quorum(len(members), 0, tuple(m.name or m.hex_id for m in members))
    out = await etcdctl(r, "endpoint health -w json", tls=tls, endpoints=",".join(urls), check=False)
    start = out.find("[")
    entries = _json(out[start:out.rfind("]") + 1] if start >= 0 else out, "endpoint health", r)
    healthy_urls = {e.get("endpoint") for e in entries if e.get("health")}  # type: ignore[union-attr]
    healthy = [m for m in members if m.client_urls[:1] and m.client_urls[0] in healthy_urls]
    unhealthy = tuple(m.name or m.hex_id for m in members if m not in healthy)
    return Quorum(len(members), len(healthy), unhealthy)


async def require_quorum(r: Remote, *, tls: EtcdTls = KUBEADM, what: str = "") -> Quorum:
    """The current quorum, or a StageError naming the numbers when there is none."""
    q = await endpoint_health(r, tls=tls)
    if not q.ok:
        raise StageError(f"etcd has no quorum{' ' + what if what else ''}: {q}")
    return q


async def snapshot_save(r: Remote, path: str, *, tls: EtcdTls = KUBEADM, workdir: str = DATA_DIR) -> None:
    """Saves a snapshot of the member `r` talks to into `path` on that node (0600), verified.

    Written first under the etcd data directory (mounted into a kubeadm etcd pod), checked with
    `snapshot status` (which reads the whole file and its hash), then moved into place, so a
    half-written or corrupt snapshot never sits at `path`.
    """
    tmp = shlex.quote(f"{workdir.rstrip('/')}/{SNAPSHOT_NAME}")
    await r.run(f"rm -f {tmp}", sudo=True)
    await etcdctl(r, f"snapshot save {tmp}", tls=tls, timeout=600)
    status = _json(await etcdctl(r, f"snapshot status {tmp} -w json", tls=tls), "snapshot status", r)
    if not isinstance(status, dict) or not status.get("totalKey"):
        await r.run(f"rm -f {tmp}", sudo=True, check=False)
        raise RemoteError(f"{r.label}: the etcd snapshot failed its status check: {status!r}")
    q = shlex.quote(path)
    await r.run(f"chmod 600 {tmp} && mkdir -p \"$(dirname {q})\" && mv -f {tmp} {q}", sudo=True)


async def snapshot_status(r: Remote, path: str) -> dict:
    """`etcdctl snapshot status` of a file on the node: hash, revision, totalKey, totalSize."""
    data = _json(await etcdctl(r, f"snapshot status {shlex.quote(path)} -w json"), "snapshot status", r)
    return data if isinstance(data, dict) else {}


def restore_command(snapshot: str, *, name: str, peer: str, data_dir: str = DATA_DIR) -> str:
    """The shell command that restores `snapshot` into a new single-member data dir.

    A restore always starts a new cluster of one (etcd's documented procedure): the other control
    planes join it again afterwards. `etcdutl` (etcd ≥ 3.5) is used when present, else etcdctl.
    """
    args = " ".join([
        "snapshot restore", shlex.quote(snapshot), f"--name={shlex.quote(name)}",
        f"--initial-cluster={shlex.quote(f'{name}={peer}')}",
        f"--initial-advertise-peer-urls={shlex.quote(peer)}", f"--data-dir={shlex.quote(data_dir)}",
    ])
    return (f"if command -v etcdutl >/dev/null 2>&1; then etcdutl {args}; "
            f"else ETCDCTL_API=3 etcdctl {args}; fi")


async def snapshot_restore(r: Remote, snapshot: str, *, name: str, peer: str, data_dir: str = DATA_DIR) -> None:
    """Replaces the node's etcd data dir with the snapshot's (the old one is kept aside, .old).

    etcd must be stopped on the node first (the caller knows how it runs there).
    """
    q = shlex.quote(data_dir)
    await r.run(f"rm -rf {q}.old && if [ -e {q} ]; then mv {q} {q}.old; fi", sudo=True)
    await r.run(restore_command(snapshot, name=name, peer=peer, data_dir=data_dir), sudo=True, timeout=600)
    await r.run(f"chmod 700 {q}", sudo=True)
