"""A simulated host: a network namespace plus private mount and UTS namespaces, held open by a
tiny process, so several libvirtds (and their sshds) run side by side on one machine.

Why a holder process: `ip netns exec` gives every command a fresh mount namespace, but a host's
libvirtd, virtlogd and sshd must share one (sshd's sessions run `virt-ssh-helper`, which must
find *that* host's libvirtd socket under /run/libvirt). The holder is started once with
`ip netns exec NS unshare --uts sh -c '<bind mounts>; exec sleep infinity'`; every daemon of the
host is then started with `nsenter -t HOLDER -n -m -u`, so it sees the host's own /etc/libvirt,
/run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt, /mnt and accounts, while
the machine's own files stay untouched. The mounts die with the last process of the host.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kubitect_core.lab import netns, procs

# Directories a host gets privately (source under the host's directory -> target in the host).
PRIVATE_DIRS: tuple[tuple[str, str], ...] = (
    ("etc-libvirt", "/etc/libvirt"),
    ("run-libvirt", "/run/libvirt"),
    ("var-lib-libvirt", "/var/lib/libvirt"),
    ("var-log-libvirt", "/var/log/libvirt"),
    ("var-cache-libvirt", "/var/cache/libvirt"),
    ("mnt", "/mnt"),
)
# Private account files (the host's SSH user, the libvirt group): copies bound over the machine's.
ACCOUNT_FILES = ("passwd", "group", "shadow")


@dataclass(frozen=True)
class HostNs:
    """A running simulated host: its network namespace and the PID that holds its mounts."""

    netns: str
    holder: int

    def argv(self, argv: list[str]) -> list[str]:
        """The argv that runs `argv` inside this host (its network, mounts and hostname)."""
        return ["nsenter", "-t", str(self.holder), "-n", "-m", "-u", "--", *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """`subprocess.run` inside this host."""
        return subprocess.run(self.argv(argv), **kw)


def mount_script(hostdir: Path, hostname: str) -> str:
    """The shell run by the holder: refuse to mount in the machine's own mount namespace, bind the
    private directories and account files, set the hostname, then sleep forever."""
    lines = [
        # `ip netns exec` unshared the mount namespace; never bind anything over the machine's files.
        f'root=$(readlink {netns.init_ns_path("mnt")}); '
        '[ -n "$root" ] && [ "$(readlink /proc/self/ns/mnt)" != "$root" ] || '
        '{ echo "refusing: not in a private mount namespace" >&2; exit 97; }',
        "set -e",
    ]
    for src, dst in PRIVATE_DIRS:
        lines.append(f"mkdir -p {shlex.quote(dst)}")
        lines.append(f"mount --bind {shlex.quote(str(hostdir / src))} {shlex.quote(dst)}")
    for name in ACCOUNT_FILES:
        lines.append(f"mount --bind {shlex.quote(str(hostdir / 'etc' / name))} /etc/{name}")
    lines.append("mkdir -p /run/sshd")
    lines.append(f"hostname {shlex.quote(hostname)}")
    lines.append("echo ready")
    lines.append("exec sleep infinity")
    return "\n".join(lines)


def prepare_dirs(hostdir: Path) -> None:
    """Creates the host's private directories (libvirt's runtime layout included)."""
    for src, _dst in PRIVATE_DIRS:
        (hostdir / src).mkdir(parents=True, exist_ok=True)
    for sub in ("var-lib-libvirt/dnsmasq", "var-lib-libvirt/images", "var-lib-libvirt/qemu",
                "var-log-libvirt/qemu", "var-cache-libvirt/qemu", "etc"):
        (hostdir / sub).mkdir(parents=True, exist_ok=True)


def start(ns: str, hostdir: Path, hostname: str, env: dict[str, str], timeout: float = 10.0) -> HostNs:
    """Starts the holder of host `hostname` in network namespace `ns`; returns once its mounts exist.

    The account files (hostdir/etc/passwd, group, shadow) must be written before.
    """
    prepare_dirs(hostdir)
    log = hostdir / "holder.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            netns.exec_argv(ns, ["unshare", "--uts", "sh", "-c", mount_script(hostdir, hostname)]),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # outlives `kubitect lab up`; stopped by PID at `lab down`
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "ready" in text.split():
            holder = _sleeper(proc.pid)
            if holder is not None:
                return HostNs(ns, holder)
        if proc.poll() is not None:
            raise RuntimeError(f"host {hostname}: the namespace holder exited ({proc.returncode}): {text[-800:]}")
        time.sleep(0.05)
    raise RuntimeError(f"host {hostname}: the namespace holder did not get ready within {timeout:.0f} s")


def _sleeper(pid: int) -> int | None:
    """The PID running `sleep infinity` (the holder after its exec; `ip netns exec` and `unshare`
    exec too, so it is the same PID once the script reached its last line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if cmdline[:1] == [b"sleep"] and procs.alive(pid) else None
