"""What both built-in installers (kubeadm and k3s) need: endpoint, SANs, secrets, sources, readiness.

Moved out of the kubeadm plugin (it was `kubitect_plugins.kubeadm.shared`), so the k3s plugin no
longer imports another plugin; a rule such as "the server certificate names the VIP and every
load balancer" or "secrets are 0600 and never logged" is still written once.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shlex
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubitect_core import kubeconfig
from kubitect_core.config.versions import normalize, parse_version
from kubitect_core.contracts import Change, StageContext
from kubitect_core.remote import NodePool, Remote, RemoteError
from kubitect_core.stage import StageError
from kubitect_core.state import write_private
from kubitect_core.topology import Node

API_PORT = 6443
SOURCE_UPSTREAM = "upstream"  # download packages/binaries from the upstream repositories (default)
SOURCE_PREINSTALLED = "preinstalled"  # no download: the binaries must already be on the nodes
SOURCES = (SOURCE_UPSTREAM, SOURCE_PREINSTALLED)
PROBE_TIMEOUT = 5.0  # seconds: the internet probe must never hang a run
SECRETS_DIR = "secrets"


# --------------------------------------------------------------------------- versions


def version_tuple(version: str) -> tuple[int, int, int]:
    """`v1.34.2` -> (1, 34, 2); raises StageError for anything else (validation should prevent it)."""
    parsed = parse_version(str(version))
    if parsed is None:
        raise StageError(f"kubernetes.version '{version}' is not a version such as v1.34.2")
    return tuple(int(p) for p in parsed)  # type: ignore[return-value]


def minor_of(version: str) -> str:
    """`v1.34.2` -> `v1.34`: the upstream package repositories are per minor version."""
    major, minor, _ = version_tuple(version)
    return f"v{major}.{minor}"


def plain(version: str) -> str:
    """`v1.34.2` -> `1.34.2` (package versions carry no v)."""
    return normalize(str(version))[1:]


# --------------------------------------------------------------------------- topology


def endpoint(ctx: StageContext) -> str:
    """The control-plane endpoint the loadbalancers stage recorded, else the topology's."""
    recorded = (ctx.facts.get("loadbalancers") or {}).get("endpoint")
    return str(recorded or ctx.topology.endpoint)


def api_url(ctx: StageContext) -> str:
    """`https://<endpoint>:6443`, what every joining node and the kubeconfig use."""
    return kubeconfig.endpoint_url(endpoint(ctx), API_PORT)


def cert_sans(ctx: StageContext) -> list[str]:
    """Names the API server certificate must carry: endpoint, VIP, every LB and master IP.

    Why the masters too: `kubectl` on a master and HAProxy health checks address them directly.
    Order is stable (endpoint, VIP, LBs, masters) so the rendered config is deterministic.
    """
    topo = ctx.topology
    names = [endpoint(ctx), topo.vip, *(n.ip for n in topo.load_balancers), *(n.ip for n in topo.masters)]
    return list(dict.fromkeys(str(n) for n in names if n))


def cluster_nodes(ctx: StageContext) -> list[Node]:
    """Masters then workers: the nodes Kubernetes runs on (load balancers are not members)."""
    return [*ctx.topology.masters, *ctx.topology.workers]


def control_plane_taint_needed(ctx: StageContext) -> bool:
    """Masters keep the control-plane NoSchedule taint only when workers exist to run workloads."""
    return bool(ctx.topology.workers)


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        """Kubitect's `key[=value]:Effect` string (validated by the config) as its parts."""
        head, _, effect = text.rpartition(":")
        key, _, value = head.partition("=")
        return cls(key, value, effect)

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


CONTROL_PLANE_TAINT = Taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")


def node_taints(ctx: StageContext, node: Node) -> list[Taint]:
    """The node's taints from the merged config, plus the control-plane taint when workers exist."""
    taints = [Taint.parse(t) for t in node.taints]
    if node.role == "master" and control_plane_taint_needed(ctx) and CONTROL_PLANE_TAINT not in taints:
        taints.insert(0, CONTROL_PLANE_TAINT)
    return taints


_KUBELET_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
_KUBELET_ALLOWED_KEYS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
}


def kubelet_may_set(label: str) -> bool:
    """Whether a kubelet may self-register this label (the NodeRestriction admission rules).

    Labels in the kubernetes.io / k8s.io namespaces (e.g. node-role.kubernetes.io/worker) are
    refused when a kubelet sets them, so installers apply those with kubectl after the join.
    """
    prefix, sep, _ = label.partition("/")
    if not sep:
        return True
    if label in _KUBELET_ALLOWED_KEYS or label.startswith(_KUBELET_ALLOWED_PREFIXES):
        return True
    restricted = any(prefix == d or prefix.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))
    return not restricted


def split_labels(node: Node) -> tuple[dict[str, str], dict[str, str]]:
    """(labels the kubelet registers itself, labels set with kubectl afterwards)."""
    own = {k: str(v) for k, v in sorted(node.labels.items()) if kubelet_may_set(k)}
    later = {k: str(v) for k, v in sorted(node.labels.items()) if not kubelet_may_set(k)}
    return own, later


_POD_CANDIDATES = ("10.244.0.0/16", "10.42.0.0/16", "172.20.0.0/16", "192.168.128.0/17")
_SERVICE_CANDIDATES = ("10.96.0.0/12", "10.43.0.0/16", "172.21.0.0/16", "192.168.64.0/18")


def _free_cidr(candidates: Iterable[str], taken: list[ipaddress.IPv4Network]) -> str:
    for cand in candidates:
        net = ipaddress.ip_network(cand)
        if not any(net.overlaps(t) for t in taken):
            return cand
    raise StageError("no pod/service CIDR is free: every candidate overlaps cluster.network.cidr")


def pod_and_service_cidrs(ctx: StageContext, pod_default: str, service_default: str) -> tuple[str, str]:
    """Pod and service CIDRs that do not overlap the node network (the installer's defaults if free)."""
    node_net = ipaddress.ip_network(str(ctx.config.cluster.network.cidr), strict=False)
    pod = _free_cidr((pod_default, *_POD_CANDIDATES), [node_net])
    service = _free_cidr((service_default, *_SERVICE_CANDIDATES), [node_net, ipaddress.ip_network(pod)])
    return pod, service


# --------------------------------------------------------------------------- options


def source(ctx: StageContext) -> str:
    """Where binaries come from: `upstream` (default) or `preinstalled` (option installer_source).

    `preinstalled` exists for air-gapped nodes and for the lab, where test doubles stand in for
    kubeadm/k3s: nothing is downloaded and apply checks that the binaries are present.
    """
    value = str(ctx.options.get("installer_source") or SOURCE_UPSTREAM)
    if value not in SOURCES:
        raise StageError(f"installer_source '{value}' is unknown (choose one of: {', '.join(SOURCES)})")
    return value


def probe_timeout(ctx: StageContext) -> float:
    """Seconds the internet probe may take (option probe_timeout, default PROBE_TIMEOUT)."""
    return float(ctx.options.get("probe_timeout") or PROBE_TIMEOUT)


def ready_timeout(ctx: StageContext) -> float:
    """Seconds to wait for nodes to become Ready (option ready_timeout, default 600)."""
    return float(ctx.options.get("ready_timeout") or 600)


# --------------------------------------------------------------------------- secrets


def secrets_dir(ctx: StageContext) -> Path:
    return Path(ctx.cluster_dir) / SECRETS_DIR


def load_or_create_secrets(path: Path, make: dict[str, Any]) -> dict[str, str]:
    """The installer's secrets, generated once (secrets module) and kept 0600 in the cluster dir.

    `make` maps a key to a zero-argument generator. An existing file is reused, so a re-run joins
    with the same token; missing keys are added. The values never appear in logs or changes.
    """
    data: dict[str, str] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StageError(f"cannot read the installer secrets {path}: {type(exc).__name__}") from None
    changed = False
    for key, gen in make.items():
        if not data.get(key):
            data[key] = gen()
            changed = True
    if changed or (path.stat().st_mode & 0o777) != 0o600:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        write_private(path, json.dumps(data, indent=2) + "\n")
    return data


_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def bootstrap_token() -> str:
    """A kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`, from the secrets module."""
    pick = lambda n: "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def certificate_key() -> str:
    """A kubeadm certificate key: 32 random bytes, hex (what `kubeadm certs certificate-key` prints)."""
    return secrets.token_hex(32)


def random_token() -> str:
    """A k3s cluster token: 32 random bytes, hex (never a default, never derived from the name)."""
    return secrets.token_hex(32)


# --------------------------------------------------------------------------- internet


def probe_url(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when `url` answers (any HTTP status), else a short reason; bounded by `timeout`."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "kubitect-probe"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):  # noqa: S310 - fixed https URLs
            return None
    except urllib.error.HTTPError:
        return None  # the server answered: reachable
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def unreachable_reason(urls: list[str], timeout: float = PROBE_TIMEOUT) -> str | None:
    """A message naming the first source that cannot be reached from this machine, else None.

    Hard-bounded: name resolution is not covered by urllib's timeout, so each probe runs in a
    daemon thread that is abandoned when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    for url in urls:
        left = max(0.5, deadline - time.monotonic())
        box: list[str | None] = []
        worker = threading.Thread(target=lambda u=url, t=left, b=box: b.append(probe_url(u, t)), daemon=True)
        worker.start()
        worker.join(left + 0.5)
        problem = box[0] if box else f"no answer within {timeout:g}s"
        if problem is not None:
            return f"cannot reach {url} from this machine ({problem}); the internet is needed to download it"
    return None


def download_reason(ctx: StageContext, urls: Callable[[], list[str]]) -> str | None:
    """None when nothing is downloaded (installer_source=preinstalled) or every URL answers here.

    `urls` is called only when downloading, so a preinstalled run never computes (or probes) them.
    """
    if source(ctx) == SOURCE_PREINSTALLED:
        return None
    return unreachable_reason(urls(), probe_timeout(ctx))


async def node_unreachable_reason(node: Remote, urls: list[str], timeout: float = PROBE_TIMEOUT) -> str | None:
    """Same probe, run on a node with curl (the node downloads, so the node must reach it)."""
    for url in urls:
        cmd = f"curl -sS -o /dev/null -I --max-time {int(timeout)} {shlex.quote(url)}"
        res = await node.run(cmd, check=False, timeout=timeout + 5)
        if not res.ok:
            detail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.exit_status}"
            return f"cannot reach {url} from {node.label} ({detail}); the internet is needed to download it"
    return None


# --------------------------------------------------------------------------- nodes Ready


def ready_nodes(node_list_json: str) -> dict[str, dict[str, str]]:
    """Node name -> {"ready": "True"/"False"/"Unknown", "version": kubelet version} from kubectl JSON."""
    try:
        items = json.loads(node_list_json).get("items", [])
    except ValueError:
        return {}
    out = {}
    for item in items:
        name = item.get("metadata", {}).get("name")
        status = item.get("status", {})
        ready = next((c.get("status", "Unknown") for c in status.get("conditions", []) if c.get("type") == "Ready"),
                     "Unknown")
        out[name] = {"ready": ready, "version": status.get("nodeInfo", {}).get("kubeletVersion", "")}
    return out


async def wait_ready(remote: Remote, kubectl: str, names: list[str], timeout: float, progress,
                     interval: float = 2.0) -> dict[str, dict[str, str]]:
    """Polls `kubectl get nodes -o json` on a control plane until every named node is Ready.

    Raises StageError naming the nodes that never became Ready (and their last condition).
    """
    import asyncio

    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str, str]] = {}
    while True:
        res = await remote.run(f"{kubectl} get nodes -o json", check=False, sudo=True, timeout=60)
        if res.ok:
            seen = ready_nodes(res.stdout)
        missing = [n for n in names if seen.get(n, {}).get("ready") != "True"]
        if not missing:
            return seen
        if time.monotonic() >= deadline:
            states = ", ".join(f"{n}: {seen.get(n, {}).get('ready', 'not registered')}" for n in missing)
            raise StageError(f"nodes not Ready after {timeout:g}s ({states})")
        progress(remote.name, f"waiting for {len(missing)} node(s) to be Ready")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- kubeconfig


def finish_kubeconfig(ctx: StageContext, fetched: str) -> list[str]:
    """Renames the fetched admin kubeconfig, stores it 0600, merges it when the config asks.

    Records `kubeconfig` (the stored path) and `merged_into` (the user kubeconfig it was merged
    into, or None), so destroy removes exactly what apply added. Returns notes for the changes.
    """
    text = kubeconfig.rename(fetched, ctx.cluster, endpoint(ctx), API_PORT)
    path = Path(ctx.cluster_dir) / "kubeconfig"
    old = path.read_text() if path.exists() else None
    kubeconfig.store(path, text)
    ctx.record["kubeconfig"] = str(path)
    notes = [] if old == text else [f"kubeconfig written to {path}"]
    other = getattr(ctx.config.kubernetes, "other", None)
    if getattr(other, "merge_kubeconfig", False):
        target = Path(ctx.options.get("user_kubeconfig") or kubeconfig.default_user_kubeconfig())
        try:
            merged = kubeconfig.merge_into(target, text, ctx.cluster, name=ctx.options.get("kubeconfig_name"),
                                           receipt=ctx.record.get(kubeconfig.RECEIPT_KEY))
            ctx.record[kubeconfig.RECEIPT_KEY] = merged.receipt  # destroy removes exactly these entries
            ctx.record["merged_into"] = merged.receipt["file"]
            if merged.changed:
                notes.append(f"merged into {target} as '{merged.receipt['name']}'")
        except (kubeconfig.KubeconfigError, OSError) as exc:
            # like the original: a merge failure is only a warning, the cluster is fine
            ctx.progress(ctx.cluster, f"warning: kubeconfig not merged into {target}: {exc}")
    ctx.checkpoint()
    return notes


def drop_kubeconfig(ctx: StageContext) -> list[str]:
    """Undoes finish_kubeconfig: removes the merged entries (only if apply merged) and the file."""
    notes = []
    receipt = ctx.record.get(kubeconfig.RECEIPT_KEY)
    if receipt:
        try:
            removal = kubeconfig.remove_from(receipt)
            notes += [f"removed {e} from {receipt['file']}" for e in removal.removed]
            notes += [f"left {e} in {receipt['file']}" for e in removal.kept]
        except (kubeconfig.KubeconfigError, OSError) as exc:
            ctx.progress(ctx.cluster, f"warning: could not remove the cluster from {receipt['file']}: {exc}")
    path = Path(ctx.cluster_dir) / "kubeconfig"
    if path.exists():
        path.unlink()
        notes.append(f"deleted {path}")
    ctx.record.pop("merged_into", None)
    ctx.record.pop(kubeconfig.RECEIPT_KEY, None)
    ctx.record.pop("kubeconfig", None)
    return notes


# --------------------------------------------------------------------------- installer steps
# The steps both installers take the same way; each plugin keeps its own technology (packages and
# kubeadm init/join, or the k3s binary and units) and calls these around it.


def node_pool(ctx: StageContext) -> NodePool:
    """The SSH pool an installer run uses, bounded by option `parallel` (default 8)."""
    return NodePool.from_access(ctx.ssh, limit=int(ctx.options.get("parallel", 8)))


def kubeconfig_plan(ctx: StageContext) -> Change:
    """The plan's kubeconfig line: kept when apply already recorded it, else created."""
    return Change("keep" if ctx.record.get("kubeconfig") else "create", "file", "kubeconfig", None,
                  str(Path(ctx.cluster_dir) / "kubeconfig"))


async def first_master(ctx: StageContext, pool: NodePool, what: str, urls: list[str]) -> Remote:
    """Connects to the first master; when downloading, checks that it reaches `urls` first.

    Why before anything else: a node that cannot download must fail the run before any node
    was changed, naming the source (`what`) it cannot reach.
    """
    master = ctx.topology.masters[0]
    first = await pool.get(master.ip, name=master.name, wait=60)
    if source(ctx) == SOURCE_UPSTREAM:
        ctx.progress(master.name, f"checking that {what} is reachable")
        reason = await node_unreachable_reason(first, urls, probe_timeout(ctx))
        if reason:
            raise StageError(reason)
    return first


async def apply_restricted_labels(ctx: StageContext, first: Remote, kubectl: str) -> list[Change]:
    """Sets with kubectl the labels a kubelet may not register itself, and records them.

    Why: NodeRestriction refuses kubernetes.io labels from kubelets (see `kubelet_may_set`).
    """
    changes = []
    for node in cluster_nodes(ctx):
        _, later = split_labels(node)
        if not later:
            continue
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in later.items())
        await first.run(f"{kubectl} label node {shlex.quote(node.name)} --overwrite {pairs}", sudo=True, timeout=60)
        changes.append(Change("keep" if ctx.record.get("labels", {}).get(node.name) == later else "change",
                              "labels", node.name, node.host, ", ".join(later)))
        ctx.record.setdefault("labels", {})[node.name] = later
    return changes


async def install_cni(ctx: StageContext, first: Remote, kubectl: str, admin_kubeconfig: str,
                      cidr_defaults: tuple[str, str], *, announce: bool = True) -> list[Change]:
    """Installs the configured CNI once (recorded name + version), with a pod CIDR free of the node network.

    `cidr_defaults` are the installer's (pod, service) defaults; `announce` reports the step.
    """
    from kubitect_plugins.kubeadm import sources  # here: sources imports this module

    cni = sources.CNIS[ctx.config.kubernetes.network_plugin]
    want = {"name": cni.name, "version": cni.version}
    if ctx.record.get("cni") == want:
        return [Change("keep", "cni", cni.name, None, cni.version)]
    if announce:
        ctx.progress(ctx.topology.masters[0].name, f"installing the CNI {cni.name} {cni.version}")
    pod, _ = pod_and_service_cidrs(ctx, *cidr_defaults)
    for cmd in cni.commands(kubectl, admin_kubeconfig, pod):
        await first.run(cmd, sudo=True, timeout=600)
    ctx.record["cni"] = want
    ctx.checkpoint()
    return [Change("create", "cni", cni.name, None, cni.version)]


async def ready_then_fetch(ctx: StageContext, first: Remote, kubectl: str, admin_kubeconfig: str) -> str:
    """Waits until every cluster node is Ready, then returns the admin kubeconfig from the first master."""
    names = [n.name for n in cluster_nodes(ctx)]
    ctx.progress(ctx.topology.masters[0].name, f"waiting until {len(names)} node(s) are Ready")
    await wait_ready(first, kubectl, names, ready_timeout(ctx), ctx.progress)
    return (await first.get(admin_kubeconfig, sudo=True)).decode()


def kubeconfig_change(ctx: StageContext, fetched: str) -> Change:
    """Stores (and merges) the fetched kubeconfig (`finish_kubeconfig`) as apply's last Change."""
    notes = finish_kubeconfig(ctx, fetched)
    return Change("change" if notes else "keep", "file", "kubeconfig", None,
                  "; ".join(notes) or str(Path(ctx.cluster_dir) / "kubeconfig"))


async def remove_from_nodes(ctx: StageContext, remove: Callable[[Node, Remote], Awaitable[Change]]) -> list[Change]:
    """Runs `remove` on every reachable node: workers concurrently, then masters last-joined first.

    Unreachable nodes are reported, not fatal: their VMs are about to be deleted anyway. When the
    whole cluster is being destroyed (`machines_deleted`), the machines go right after this stage,
    so resetting each node would only cost time: nothing is run on them.
    """
    if ctx.options.get("machines_deleted"):
        return []
    async with node_pool(ctx) as pool:
        async def one(node: Node) -> Change:
            try:
                return await remove(node, await pool.get(node.ip, name=node.name))
            except RemoteError as exc:
                return Change("keep", "node", node.name, node.host, f"unreachable, skipped: {exc}")
        changes = await pool.each(list(ctx.topology.workers), one)
        for node in reversed(ctx.topology.masters):
            changes.append(await one(node))
    return changes


def forget_installation(ctx: StageContext, secret_file: Path, what: str, keys: Iterable[str]) -> list[Change]:
    """Destroy's local half: the kubeconfig (and its merge), the secrets file, the record `keys`."""
    changes = []
    notes = drop_kubeconfig(ctx)
    if notes:
        changes.append(Change("delete", "file", "kubeconfig", None, "; ".join(notes)))
    if secret_file.exists():
        secret_file.unlink()
        changes.append(Change("delete", "file", what, None, str(secret_file)))
    for key in keys:
        ctx.record.pop(key, None)
    ctx.checkpoint()
    return changes
