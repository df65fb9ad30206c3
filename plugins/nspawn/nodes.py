"""vms layer: one systemd-nspawn container per node, booted with real systemd and sshd.

Each container boots the shared read-only rootfs with a private tmpfs overlay
(`--volatile=overlay`), gets a veth on the cluster bridge (`--network-bridge`), and is then
configured from outside: its address and default route through `nsenter -n` with this machine's
`ip`, its user (cluster key, passwordless sudo) through `nsenter` into the container. A node is
done when SSH answers as that user with the host key kubitect made and pinned for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from kubitect_core.sdk import Change, Node, StageContext, remote
from kubitect_core.sdk.images import cached_rootfs

from . import storage
from .host import (
    NODE_MARK_ENV,
    SPEC_MARK_ENV,
    NspawnError,
    cluster_id,
    find_nodes,
    kill_orphans,
    leader_of,
    marked_processes,
    marker,
    node_process,
    nspawn_prefix,
    own_cgroup_argv,
    remove_cgroups,
    root_netns_refusal,
    sh,
    spec_of,
    stop_process,
)
from .settings import DISK_MOUNT_DIR, ROOTFS_EXTRA_PACKAGES, cluster_bridge, cluster_net, my_nodes, node_user, rootfs

DEFAULT_PARALLEL = 3
BOOT_TIMEOUT = 20.0  # systemd-nspawn started -> container's systemd running (measured ~0.5 s)
SSH_TIMEOUT = 120.0  # container running -> SSH answers (measured ~1-2 s)


def node_spec(ctx: StageContext, node: Node, root: Path) -> dict[str, Any]:
    """Everything that shapes a running container; a change in it means a restart."""
    net = cluster_net(ctx)
    if not node.ip:
        raise NspawnError(f"node {node.name}: the nspawn provider needs a static IP (cluster.nodes...ip)")
    return {
        "rootfs": str(root),
        "bridge": cluster_bridge(ctx),
        "ip": f"{node.ip}/{net.network.prefixlen}",
        "gateway": str(net.gateway),
        "mac": node.mac,
        "user": node_user(ctx),
        "key": ctx.ssh.public_key_text(),
        "disks": {d: str(p) for d, p in storage.disk_paths(ctx, node).items()},
        "hosts": hosts_file(ctx),
    }


def spec_hash(spec: dict[str, Any]) -> str:
    """The digest that decides a restart. /etc/hosts is left out: it lists every node, so a node
    added or removed would otherwise restart every running node (a scale would cut the VIP); a
    running node keeps its own name resolvable, and its boot file is refreshed in place."""
    return hashlib.sha256(json.dumps({k: v for k, v in spec.items() if k != "hosts"},
                                     sort_keys=True).encode()).hexdigest()[:12]


def nspawn_argv(ctx: StageContext, node: Node, spec: dict[str, Any]) -> list[str]:
    """The systemd-nspawn command line of one node (test-labs.md §2 recipe)."""
    ndir = storage.node_dir(ctx, node.name)
    key = storage.host_key_path(ctx, node.name)
    boot = ndir / "boot"
    argv = [
        *nspawn_prefix(), *own_cgroup_argv(node.name),
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit",
        "--console=passive", f"--machine={node.name}", f"--hostname={node.name}",
        f"--network-bridge={spec['bridge']}", "--capability=CAP_NET_ADMIN",
        f"--directory={spec['rootfs']}", "--volatile=overlay",
        f"--bind-ro={key}:/etc/ssh/ssh_host_ed25519_key",
        f"--bind-ro={key}.pub:/etc/ssh/ssh_host_ed25519_key.pub",
        f"--bind-ro={ndir / 'sshd.conf'}:/etc/ssh/sshd_config.d/10-kubitect.conf",
        f"--bind-ro={boot / 'etc'}:/etc/kubitect",
        f"--bind-ro={boot / SETUP_UNIT}:/etc/systemd/system/{SETUP_UNIT}",
        f"--bind-ro={boot / 'ssh-setup.conf'}:/etc/systemd/system/ssh.service.d/20-kubitect-setup.conf",
        # the container's init carries the marker too: found even if systemd-nspawn is killed
        f"--setenv={NODE_MARK_ENV}={marker(cluster_id(ctx.cluster_dir), node.name)}",
    ]
    for disk, path in spec["disks"].items():
        argv.append(f"--bind={path}:{DISK_MOUNT_DIR}/{disk}.img")
    return argv


def _net_script(spec: dict[str, Any]) -> str:
    steps = []
    if spec["mac"]:
        steps.append(f"ip link set host0 address {shlex.quote(spec['mac'])}")
    steps += [
        f"ip addr replace {spec['ip']} dev host0",
        "ip link set host0 up",
        "ip link set lo up",
        f"ip route replace default via {spec['gateway']}",
    ]
    return " && ".join(steps)


SETUP_UNIT = "kubitect-node-setup.service"
_SETUP_SCRIPT = r"""#!/bin/sh
# Written by kubitect: runs at every boot of this node, before sshd (the overlay is volatile).
set -e
u="$(cat /etc/kubitect/user)"
id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
home=$(getent passwd "$u" | cut -d: -f6)
install -d -m 700 -o "$u" -g "$u" "$home/.ssh"
install -m 600 -o "$u" -g "$u" /etc/kubitect/authorized_keys "$home/.ssh/authorized_keys"
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$u" > /etc/sudoers.d/90-kubitect
chmod 440 /etc/sudoers.d/90-kubitect
cat /etc/kubitect/hosts > /etc/hosts
# pam_nologin refuses every non-root login while /run/nologin exists, i.e. until
# systemd-user-sessions runs at the end of the boot. The cluster user is how kubitect manages the
# node, and the node is ready for it once this unit is done: do not make it wait for (or hang on)
# unrelated boot jobs.
rm -f /run/nologin
"""
_SETUP_UNIT_TEXT = """\
[Unit]
Description=kubitect node setup: login user, cluster key, sudo, /etc/hosts
After=systemd-sysusers.service local-fs.target systemd-tmpfiles-setup.service
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /etc/kubitect/setup.sh
"""
_SSH_DROPIN_TEXT = f"""\
[Unit]
Requires={SETUP_UNIT}
After={SETUP_UNIT}
"""


def write_boot_files(ctx: StageContext, node: Node, spec: dict[str, Any]) -> Path:
    """The node's boot-time setup, bind-mounted read-only: user, key, sudo rule, /etc/hosts.

    Why a unit and not commands from outside: it runs inside the node's own boot order (after
    systemd's user database setup, before sshd), so it cannot race the boot, and it runs again
    on every start of the volatile container.
    """
    setup = storage.node_dir(ctx, node.name) / "boot"
    setup.mkdir(mode=0o700, exist_ok=True)
    (setup / "etc").mkdir(exist_ok=True)
    (setup / "etc" / "setup.sh").write_text(_SETUP_SCRIPT)
    (setup / "etc" / "user").write_text(spec["user"] + "\n")
    (setup / "etc" / "authorized_keys").write_text(spec["key"].strip() + "\n")
    (setup / "etc" / "hosts").write_text(spec["hosts"] + "\n")
    (setup / SETUP_UNIT).write_text(_SETUP_UNIT_TEXT)
    (setup / "ssh-setup.conf").write_text(_SSH_DROPIN_TEXT)
    return setup


def hosts_file(ctx: StageContext) -> str:
    """/etc/hosts for a node: every cluster node by name, so no lookup waits for an absent DNS.

    (sudo resolves the own hostname: without this it stalls 20 s per call on a node without DNS.)
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{n.ip}\t{n.name}" for n in ctx.topology.nodes if n.ip]
    return "\n".join(lines)


async def _wait_leader(proc: subprocess.Popen, node: str, log: Path) -> int:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        leader = leader_of(proc.pid)
        if leader:
            return leader
        await asyncio.sleep(0.05)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    if proc.poll() is None:
        await stop_process(proc.pid, grace=3)
    raise NspawnError(f"node {node}: container did not boot (systemd-nspawn exit {proc.poll()}):\n{tail}")


def _pin_host_key(ctx: StageContext, node: Node) -> None:
    """Pins the key kubitect generated for this node (not trust on first use)."""
    import asyncssh

    key = asyncssh.read_public_key(f"{storage.host_key_path(ctx, node.name)}.pub")
    remote.pin_key(Path(ctx.ssh.known_hosts), node.ip or "", 22, key, replace=True)


async def delete_stale_veth(machine: str) -> bool:
    """Removes a bridge port left by a container that died uncleanly (else nspawn: "File exists")."""
    _, out, _ = await sh("ip", "-j", "link", "show", check=False)
    want = f"vb-{machine}"
    for link in json.loads(out or "[]"):
        if link.get("ifname") == want or want in link.get("altnames", []):
            await sh("ip", "link", "del", link["ifname"], check=False)
            return True
    return False


async def start_node(ctx: StageContext, node: Node, spec: dict[str, Any], digest: str) -> dict[str, Any]:
    """Boots one container, configures network and user, waits for SSH; returns its record."""
    storage.ensure_node_files(ctx, node)
    if await kill_orphans(cluster_id(ctx.cluster_dir), node.name):
        ctx.progress(node.name, "killed the remains of a container whose systemd-nspawn died")
    await delete_stale_veth(node.name)
    ndir = storage.node_dir(ctx, node.name)
    write_boot_files(ctx, node, spec)
    log = ndir / "console.log"
    env = {**os.environ, NODE_MARK_ENV: marker(cluster_id(ctx.cluster_dir), node.name),
           SPEC_MARK_ENV: digest}
    ctx.progress(node.name, "starting container")
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(nspawn_argv(ctx, node, spec), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        leader = await _wait_leader(proc, node.name, log)
        await sh("nsenter", "-t", str(leader), "-n", "--", "sh", "-c", _net_script(spec))
        _, out_json, _ = await sh("nsenter", "-t", str(leader), "-n", "--", "ip", "-j", "link", "show", "host0")
        mac = json.loads(out_json)[0].get("address")
        _pin_host_key(ctx, node)
        ctx.progress(node.name, "waiting for SSH")
        try:
            conn = await remote.wait_reachable(
                node.ip or "", user=spec["user"], key=ctx.ssh.private_key, known_hosts=ctx.ssh.known_hosts,
                timeout=float(ctx.options.get("ssh_timeout", SSH_TIMEOUT)), name=node.name,
            )
        except remote.RemoteError as exc:
            raise NspawnError(f"{exc}\n{await _diagnose(leader)}") from None
        await conn.close()
    except BaseException:
        await stop_process(proc.pid, grace=3)
        raise
    ctx.progress(node.name, f"up in {time.monotonic() - started:.1f}s")
    return _record(ctx, node, spec, digest, proc.pid, mac)


async def _diagnose(leader: int) -> str:
    """What the node itself says about setup and sshd, for an error message."""
    _, out, err = await sh("nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--", "journalctl",
                           "--no-pager", "-n", "25", "-u", SETUP_UNIT, "-u", "ssh.service", check=False,
                           timeout=15)
    _, addr, _ = await sh("nsenter", "-t", str(leader), "-n", "--", "ip", "-o", "addr", check=False)
    _, boot, _ = await sh("nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--", "sh", "-c",
                          "systemctl is-system-running; ls /run/nologin 2>&1; systemctl list-jobs --no-pager "
                          "| head -15; systemctl --failed --no-pager | head -10", check=False, timeout=15)
    return f"node journal (setup, ssh):\n{out or err}\nnode addresses:\n{addr}\nboot state:\n{boot}"


async def _mac_of(pid: int) -> str | None:
    leader = leader_of(pid)
    if not leader:
        return None
    rc, out, _ = await sh("nsenter", "-t", str(leader), "-n", "--", "ip", "-j", "link", "show", "host0",
                          check=False)
    return json.loads(out)[0].get("address") if rc == 0 and out.strip() else None


def _record(ctx: StageContext, node: Node, spec: dict[str, Any], digest: str, pid: int,
            mac: str | None) -> dict[str, Any]:
    return {
        # name, host, ip, mac, domain: what every provider records (contracts.VmProvider)
        "name": node.name, "host": node.host, "ip": node.ip, "mac": mac.lower() if mac else None,
        "domain": node.name, "pid": pid,
        "role": node.role, "spec": digest, "rootfs": spec["rootfs"],
        "dir": str(storage.node_dir(ctx, node.name)),
        "volumes": {"overlay": "tmpfs (volatile)", **spec["disks"]},
    }


def _running(ctx: StageContext, name: str, found: dict[str, int]) -> int | None:
    cid = cluster_id(ctx.cluster_dir)
    pid = ctx.record.get("nodes", {}).get(name, {}).get("pid")
    if node_process(pid, cid, name):
        return pid
    pid = found.get(name)
    return pid if node_process(pid, cid, name) else None


async def _decide(ctx: StageContext, hosts: list[str], root: Path | None):
    """(node, spec, digest, pid, action, detail) per wanted node, and the stale running ones."""
    found = find_nodes(cluster_id(ctx.cluster_dir))
    decisions = []
    for node in my_nodes(ctx, hosts):
        recorded = ctx.record.get("nodes", {}).get(node.name, {})
        spec = node_spec(ctx, node, root or Path(recorded.get("rootfs") or "<image to build>"))
        digest = spec_hash(spec)
        pid = _running(ctx, node.name, found)
        if pid and spec_of(pid) == digest:
            decisions.append((node, spec, digest, pid, "keep", ""))
        elif pid:
            decisions.append((node, spec, digest, pid, "change", "spec changed: restart"))
        elif node.name in ctx.record.get("nodes", {}):
            decisions.append((node, spec, digest, None, "change", "not running: restart"))
        else:
            decisions.append((node, spec, digest, None, "create", ""))
    wanted = {n.name for n in my_nodes(ctx, hosts)}
    stale = {n: p for n, p in found.items() if n not in wanted}
    for name in ctx.record.get("nodes", {}):
        if name not in wanted:
            stale.setdefault(name, 0)
    return decisions, stale


def _image_for_plan(ctx: StageContext) -> Path | None:
    try:
        explicit = ctx.options.get("nspawn_rootfs") or os.environ.get("KUBITECT_NSPAWN_ROOTFS")
        if explicit:
            return Path(explicit)
        return cached_rootfs(Path(ctx.home), ROOTFS_EXTRA_PACKAGES)
    except Exception:  # noqa: BLE001 - planning must not fail on image lookup details
        return None


async def plan(ctx: StageContext, hosts: list[str]) -> list[Change]:
    """What apply would do per node; builds no image and starts nothing."""
    root = _image_for_plan(ctx)
    decisions, stale = await _decide(ctx, hosts, root)
    changes = [Change(action, "container", node.name, node.host, detail)
               for node, _s, _d, _p, action, detail in decisions]
    changes += [Change("delete", "container", name) for name in sorted(stale)]
    return changes


async def apply(ctx: StageContext, hosts: list[str]) -> list[Change]:
    """Converges the containers: keep the right ones, (re)start the rest, remove unwanted ones."""
    refusal = root_netns_refusal()
    if refusal:
        raise NspawnError(refusal)
    root = rootfs(ctx)
    decisions, stale = await _decide(ctx, hosts, root)
    records = ctx.record.setdefault("nodes", {})
    changes: list[Change] = []

    async def remove(name: str, pid: int | None) -> Change:
        if pid:
            await stop_process(pid)
        await remove_cgroups(name)
        ip = records.get(name, {}).get("ip")
        if ip:  # the node is gone: its pinned key must not vouch for a later machine at this address
            remote.forget_host(Path(ctx.ssh.known_hosts), ip)
        records.pop(name, None)
        return Change("delete", "container", name)

    # side by side, as destroy does: each clean container shutdown takes seconds, and nothing
    # orders them (the engine's removal phase has already taken the nodes out of the cluster)
    changes += await asyncio.gather(*(remove(name, pid) for name, pid in sorted(stale.items())))
    sem = asyncio.Semaphore(int(ctx.options.get("nspawn_parallel", DEFAULT_PARALLEL)))

    async def converge(item) -> Change:
        node, spec, digest, pid, action, detail = item
        if action == "keep":
            hosts = storage.node_dir(ctx, node.name) / "boot" / "etc" / "hosts"
            if hosts.parent.is_dir() and (not hosts.exists() or hosts.read_text() != spec["hosts"] + "\n"):
                hosts.write_text(spec["hosts"] + "\n")  # read at the next start (see spec_hash)
            rec = records.get(node.name)
            if not rec or rec.get("pid") != pid:  # record lost: rebuild it from the running node
                rec = _record(ctx, node, spec, digest, pid, await _mac_of(pid))
            records[node.name] = rec
            return Change("keep", "container", node.name, node.host)
        async with sem:
            if pid:
                ctx.progress(node.name, "stopping container (spec changed)")
                await stop_process(pid)
            records[node.name] = await start_node(ctx, node, spec, digest)
        return Change(action, "container", node.name, node.host, detail)

    results = await asyncio.gather(*(converge(d) for d in decisions), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    changes += [r for r in results if isinstance(r, Change)]
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise NspawnError("; ".join(str(e) for e in errors))
    return changes


async def destroy(ctx: StageContext, hosts: list[str]) -> list[Change]:
    """Stops every container of the cluster (by recorded PID, else by marker) and unpins their keys."""
    cid = cluster_id(ctx.cluster_dir)
    found = find_nodes(cid)
    records = ctx.record.get("nodes", {})
    targets: dict[str, int | None] = {n: r.get("pid") for n, r in records.items()}
    for name, pid in found.items():
        if not node_process(targets.get(name), cid, name):
            targets[name] = pid
    changes = []

    async def stop(name: str, pid: int | None) -> Change | None:
        alive = node_process(pid, cid, name)
        if alive:
            ctx.progress(name, "stopping container")
            await stop_process(pid or 0)
        ip = records.get(name, {}).get("ip")
        if ip:
            remote.forget_host(Path(ctx.ssh.known_hosts), ip)
        return Change("delete", "container", name, records.get(name, {}).get("host")) if alive else None

    results = await asyncio.gather(*(stop(n, p) for n, p in sorted(targets.items())))
    changes = [c for c in results if c]
    left = sorted(marked_processes(cid))  # containers whose systemd-nspawn died before us
    await kill_orphans(cid)
    for name in sorted(set(targets) | set(left)):
        await remove_cgroups(name)
    done = {c.name for c in changes}
    changes += [Change("delete", "container", name, records.get(name, {}).get("host"), "remains killed")
                for name in left if name not in done]
    ctx.record["nodes"] = {}
    return changes
