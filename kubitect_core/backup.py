"""`kubitect backup` and `kubitect restore`: one file with what brings a control plane back.

The backup is a gzip'd tar, created 0600 (it holds private keys), with:

    manifest.json      cluster, time, kubitect version, the master it came from, the snapshot's
                       `etcdctl snapshot status` (hash, revision, keys)
    etcd/snapshot.db   an etcd snapshot (kubitect_core.kube.etcd.snapshot_save: status-checked)
    pki.tar.gz         the control plane's /etc/kubernetes/pki (cluster CA, etcd CA, service-account
                       and front-proxy keys: what a restored etcd's data is only usable with)
    state/...          the cluster directory: configs, record, SSH key and known_hosts, installer
                       secrets, kubeconfig (not the logs and reports)

Restore follows etcd's documented disaster-recovery procedure on a kubeadm control plane:
every master's etcd static pod (and API server, when it runs as one) is stopped by moving its
manifest aside; the first master gets the PKI back and its data dir restored from the
snapshot as a new one-member cluster; its etcd starts; every other master's stale data dir is
wiped and the node rejoins as a new member (`member add`, then its manifest back with the new
`--initial-cluster` and state `existing`), one at a time, with quorum checked after each.
The state files are put back only where the cluster directory lacks them (a lost home).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubitect_core.kube import control_plane, etcd
from kubitect_core.kube.steps import node_pool
from kubitect_core.remote import Remote
from kubitect_core.stage import StageError

if TYPE_CHECKING:
    from kubitect_core.engine import Engine, Options

FORMAT = 1
PKI_DIR = "/etc/kubernetes/pki"
MANIFESTS = "/etc/kubernetes/manifests"
PARKED = "/etc/kubernetes/kubitect-restore"  # where stopped static pods' manifests wait
WORK = "/var/lib/kubitect-backup"  # on the node: the snapshot before it is fetched / restored
STATE_SKIP = {"logs", "reports", "events.jsonl"}
STOP_TIMEOUT = 60.0


@dataclass
class BackupInfo:
    path: Path
    size: int
    manifest: dict[str, Any]


def default_output(cluster: str) -> Path:
    return Path.cwd() / f"{cluster}-backup-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _state_files(state_dir: Path) -> list[Path]:
    out = []
    for path in sorted(state_dir.rglob("*")):
        rel = path.relative_to(state_dir)
        if path.is_file() and not path.is_symlink() and rel.parts[0] not in STATE_SKIP and ".lock" not in path.name:
            out.append(path)
    return out


def _cluster(engine: Engine, cluster: str):
    """The applied config, the record and the as-built kubernetes context pieces of `cluster`."""
    from kubitect_core.engine import EngineError

    state = engine._state(cluster, "backup")
    text = state.applied_text()
    if text is None:
        raise EngineError(f"cluster '{cluster}' has never been applied (in {state.dir.parent})")
    loaded = engine.load_raw(text, str(state.applied_path))
    manager = loaded.config.kubernetes.manager
    if manager not in ("kubeadm", "kubespray"):
        raise EngineError(f"backup and restore support kubeadm clusters; '{cluster}' uses {manager} "
                          "(k3s: `k3s etcd-snapshot save` on a server)")
    return state, loaded


async def backup(engine: Engine, cluster: str, output: Path, opts: Options) -> BackupInfo:
    """Writes the backup file (see the module docstring); refuses to overwrite an existing file."""
    from kubitect_core.engine import EngineError, _record

    state, loaded = _cluster(engine, cluster)
    output = Path(output)
    if output.exists():
        raise EngineError(f"{output} exists; give another --file (a backup never overwrites a file)")
    record = _record(state)
    ssh = engine._ssh(state, loaded, create=False)
    ctx = engine._context(state, loaded, record, engine.registry.stage("kubernetes"), ssh, opts, save=lambda: None)
    async with node_pool(ctx) as pool:
        master, r = await control_plane.staying_master(pool, ctx.topology.masters, set())
        ctx.progress(master.name, "etcd snapshot")
        quorum = await etcd.require_quorum(r, what="to take a consistent snapshot")
        remote_snap = f"{WORK}/snapshot.db"
        await etcd.snapshot_save(r, remote_snap)
        try:
            status = await etcd.snapshot_status(r, remote_snap)
            snapshot = await r.get(remote_snap, sudo=True)
        finally:
            await r.run(f"rm -f {remote_snap}", sudo=True, check=False)
        ctx.progress(master.name, "control-plane PKI")
        pki = await _get_tar(r, PKI_DIR)
    manifest = {
        "format": FORMAT, "cluster": cluster, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kubitect": _version(), "from": master.name, "etcd": {**status, "members": quorum.members},
        "kubernetes": str(loaded.config.kubernetes.version), "manager": loaded.config.kubernetes.manager,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
            _add(tar, "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
            _add(tar, "etcd/snapshot.db", snapshot)
            _add(tar, "pki.tar.gz", pki)
            for path in _state_files(state.dir):
                _add(tar, f"state/{path.relative_to(state.dir)}", path.read_bytes())
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return BackupInfo(output, output.stat().st_size, manifest)


def _version() -> str:
    from kubitect_core import __version__

    return __version__


async def _get_tar(r: Remote, directory: str) -> bytes:
    """A directory of the node as a tar.gz (made in a 0700 work dir, fetched, removed)."""
    parent, name = os.path.split(directory.rstrip("/"))
    out = f"{WORK}/{name}.tar.gz"
    await r.run(f"umask 077 && mkdir -p {WORK} && tar -C {shlex.quote(parent)} -czf {out} {shlex.quote(name)}",
                sudo=True)
    try:
        return await r.get(out, sudo=True)
    finally:
        await r.run(f"rm -f {out}", sudo=True, check=False)


# ---------------------------------------------------------------------------------- restore


def read_backup(path: Path) -> tuple[dict[str, Any], bytes, bytes, dict[str, bytes]]:
    """(manifest, snapshot, pki tar, state files) of a backup file, checked member by member."""
    from kubitect_core.engine import EngineError

    try:
        with tarfile.open(path, "r:gz") as tar:
            files: dict[str, bytes] = {}
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if not m.isfile() or m.name.startswith("/") or ".." in parts:
                    raise EngineError(f"{path}: unexpected member {m.name!r}: not a kubitect backup")
                fh = tar.extractfile(m)
                files[m.name] = fh.read() if fh else b""
    except (OSError, tarfile.TarError) as exc:
        raise EngineError(f"{path}: cannot read the backup: {exc}") from None
    for need in ("manifest.json", "etcd/snapshot.db", "pki.tar.gz"):
        if need not in files:
            raise EngineError(f"{path}: not a kubitect backup (no {need})")
    manifest = json.loads(files["manifest.json"])
    state = {k.removeprefix("state/"): v for k, v in files.items() if k.startswith("state/")}
    return manifest, files["etcd/snapshot.db"], files["pki.tar.gz"], state


def restore_state_files(state_dir: Path, files: dict[str, bytes]) -> list[str]:
    """Puts back the state files the cluster directory lacks (0600, directories 0700)."""
    put = []
    for rel, data in sorted(files.items()):
        target = state_dir / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        put.append(rel)
    return put


async def _park(r: Remote, pods: tuple[str, ...]) -> None:
    """Stops static pods by moving their manifests aside (what the kubelet watches)."""
    moves = " ; ".join(f"if [ -f {MANIFESTS}/{p}.yaml ]; then mv -f {MANIFESTS}/{p}.yaml {PARKED}/; fi"
                       for p in pods)
    await r.run(f"mkdir -p {PARKED} && {moves}", sudo=True)


async def _unpark(r: Remote) -> None:
    await r.run(f"if [ -d {PARKED} ]; then for f in {PARKED}/*.yaml; do [ -e \"$f\" ] && mv -f \"$f\" {MANIFESTS}/; "
                f"done; rmdir {PARKED} 2>/dev/null; fi; true", sudo=True)


async def _wait_etcd_stopped(r: Remote, name: str) -> None:
    """Until nothing answers on the node's etcd client port (connection refused)."""
    script = (f"t=0; while curl -sk --max-time 1 https://127.0.0.1:{etcd.CLIENT_PORT}/health >/dev/null 2>&1 "
              f"|| [ $? -ne 7 ]; do t=$((t+1)); [ $t -ge {int(STOP_TIMEOUT * 5)} ] && exit 1; sleep 0.2; done")
    res = await r.run(script, sudo=True, check=False, timeout=STOP_TIMEOUT + 30)
    if not res.ok:
        raise StageError(f"{name}: etcd did not stop within {STOP_TIMEOUT:g}s after its manifest was moved")


async def _wait_etcd_healthy(r: Remote, name: str, timeout: float = 90.0) -> etcd.Quorum:
    deadline = time.monotonic() + timeout
    while True:
        try:
            q = await etcd.endpoint_health(r)
            if q.ok and q.healthy == q.members:  # the new member started too (it has no name before)
                return q
        except Exception as exc:  # etcd not up yet: keep asking until the deadline
            q = exc  # type: ignore[assignment]
        if time.monotonic() > deadline:
            raise StageError(f"{name}: etcd did not become healthy within {timeout:g}s ({q})")
        await asyncio.sleep(0.5)


async def restore(engine: Engine, cluster: str, path: Path, opts: Options) -> list[str]:
    """Brings the control plane back from a backup file; returns what was done, step by step."""
    from kubitect_core.engine import EngineError, _record

    manifest, snapshot, pki, files = read_backup(path)
    if manifest.get("cluster") != cluster:
        raise EngineError(f"{path} is a backup of cluster '{manifest.get('cluster')}', not of '{cluster}'")
    from kubitect_core.state import ClusterState

    done = [f"backup of {cluster} from {manifest.get('from')} taken {manifest.get('created')} "
            f"(etcd revision {manifest.get('etcd', {}).get('revision')}, {manifest.get('etcd', {}).get('totalKey')} "
            "keys)"]
    state_dir = ClusterState(engine.home, cluster).dir
    put = restore_state_files(state_dir, files)
    if put:
        os.chmod(state_dir, 0o700)
        done.append(f"state files put back: {', '.join(put)}")
    state, loaded = _cluster(engine, cluster)
    with state.lock(opts.wait_lock):
        record = _record(state)
        ssh = engine._ssh(state, loaded, create=False)
        ctx = engine._context(state, loaded, record, engine.registry.stage("kubernetes"), ssh, opts,
                              save=lambda: None)
        masters = list(ctx.topology.masters)
        async with node_pool(ctx) as pool:
            remotes = [(m, await pool.get(m.ip, name=m.name, wait=30)) for m in masters]
            for m, r in remotes:
                ctx.progress(m.name, "stopping etcd and the API server (static pods parked)")
                await _park(r, ("etcd", "kube-apiserver"))
            for m, r in remotes:
                await _wait_etcd_stopped(r, m.name)
            first, r1 = remotes[0]
            ctx.progress(first.name, "PKI back, etcd restored from the snapshot as a new one-member cluster")
            await r1.put(pki, f"{WORK}/pki.tar.gz", mode=0o600, sudo=True)
            await r1.run(f"tar -C {shlex.quote(os.path.dirname(PKI_DIR))} -xzf {WORK}/pki.tar.gz && "
                         f"rm -f {WORK}/pki.tar.gz", sudo=True)
            await r1.put(snapshot, f"{WORK}/restore.db", mode=0o600, sudo=True)
            await etcd.snapshot_restore(r1, f"{WORK}/restore.db", name=first.name, peer=etcd.peer_url(str(first.ip)))
            await r1.run(f"rm -f {WORK}/restore.db && rm -rf {etcd.DATA_DIR}.old", sudo=True)
            await _unpark(r1)
            q = await _wait_etcd_healthy(r1, first.name)
            done.append(f"{first.name}: etcd restored ({q})")
            for m, r in remotes[1:]:
                ctx.progress(m.name, "rejoining etcd as a new member")
                await r.run(f"rm -rf {etcd.DATA_DIR}", sudo=True)
                added = await etcd.member_add(r1, m.name, etcd.peer_url(str(m.ip)))
                flags = (f"s#--initial-cluster=.*#--initial-cluster={added.initial_cluster}#; "
                         "s#--initial-cluster-state=.*#--initial-cluster-state=existing#")
                await r.run(f"sed -i {shlex.quote(flags)} {PARKED}/etcd.yaml", sudo=True)
                await _unpark(r)
                q = await _wait_etcd_healthy(r1, m.name)
                done.append(f"{m.name}: rejoined etcd ({q})")
    return done
