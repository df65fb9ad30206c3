"""virtlogd and libvirtd started by hand inside a lab namespace (no systemd on these machines).

Inside the namespace, every bridge, dnsmasq and firewall rule libvirt makes stays there; the
`qemu:///system` socket is a file under /run, so clients reach it from any namespace.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

from kubitect_core.lab import netns, procs

LIBVIRT_SOCK = Path("/run/libvirt/libvirt-sock")
ETC_LIBVIRT = Path("/etc/libvirt")
QEMU_USER = "libvirt-qemu"
# Used when the machine has no libvirt-qemu user (libvirt-daemon-system not installed): QEMU
# then runs as root, which also lets it read images under a root-owned kubitect home.
_QEMU_CONF_ROOT = """\
# Written by the kubitect lab harness (private to the lab's mount namespace).
user = "root"
group = "root"
remember_owner = 0
security_driver = "none"
"""
DNSMASQ_DIR = Path("/var/lib/libvirt/dnsmasq")
# Directories the libvirt-daemon-system package would create; the daemons fail without them.
RUNTIME_DIRS = (DNSMASQ_DIR, Path("/var/log/libvirt/qemu"), Path("/var/lib/libvirt/images"))
URI = "qemu:///system"


def socket_answers(path: Path = LIBVIRT_SOCK) -> bool:
    """True when something accepts connections on libvirtd's socket (a libvirtd is running)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def prepare_host() -> None:
    """Directories libvirtd needs that its (absent) systemd packaging would have created."""
    for path in RUNTIME_DIRS:
        path.mkdir(parents=True, exist_ok=True)


def private_config(state: Path) -> Path:
    """A lab-private copy of /etc/libvirt, bind-mounted over it for the lab's daemons only.

    Why: the lab must not edit the machine's config, yet it must drop network autostart links
    (Debian's `default` NAT network must never start) and, without the libvirt-qemu user, run
    QEMU as root. The bind mount lives in the mount namespace `ip netns exec` gives the daemons.
    """
    conf = state / "etc-libvirt"
    shutil.rmtree(conf, ignore_errors=True)
    if ETC_LIBVIRT.is_dir():
        shutil.copytree(ETC_LIBVIRT, conf, symlinks=True)
    else:
        conf.mkdir(parents=True)
    autostart = conf / "qemu/networks/autostart"
    if autostart.is_dir():
        shutil.rmtree(autostart)
    if not has_qemu_user():
        (conf / "qemu.conf").write_text(_QEMU_CONF_ROOT)
    return conf


def has_qemu_user() -> bool:
    """True when the machine has the user libvirtd's QEMU driver resolves at start-up."""
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return False
    return True


def private_accounts(state: Path) -> tuple[Path, Path]:
    """Copies of /etc/passwd and /etc/group that also name the libvirt-qemu user and group.

    Why: Debian's libvirtd looks that user up before it reads qemu.conf and refuses to start
    without it; the lab shows it only to its own daemons (bind mounts in their mount
    namespace) instead of adding a user to the machine. QEMU itself runs as root (qemu.conf).
    """
    passwd, group = state / "passwd", state / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text().rstrip("\n")
        + f"\n{QEMU_USER}:x:64055:64055:Libvirt Qemu (kubitect lab):/var/lib/libvirt:/usr/sbin/nologin\n"
    )
    group.write_text(Path("/etc/group").read_text().rstrip("\n") + f"\n{QEMU_USER}:x:64055:\n")
    return passwd, group


def read_pid(pidfile: Path) -> int | None:
    """The PID a daemon wrote, if that process is still alive."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if procs.alive(pid) else None


def start(ns: str, state: Path, env: dict[str, str], timeout: float = 90.0) -> dict[str, int]:
    """Start virtlogd then libvirtd in `ns`, wait until `qemu:///system` answers; their PIDs.

    Refuses when another libvirtd already serves the socket: there is one system libvirtd per
    machine, and a second one in another namespace would fight over /run/libvirt.
    """
    if socket_answers():
        raise RuntimeError(
            f"a libvirtd already answers on {LIBVIRT_SOCK}; stop it (or its lab) before starting "
            f"one in {ns}"
        )
    prepare_host()
    state.mkdir(parents=True, exist_ok=True)
    conf = private_config(state)
    mounts = [(conf, ETC_LIBVIRT)]
    if not has_qemu_user():
        passwd, group = private_accounts(state)
        mounts += [(passwd, Path("/etc/passwd")), (group, Path("/etc/group"))]
    binds = " && ".join(
        f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(dst))}" for src, dst in mounts
    )

    def argv(daemon: str, pidfile: Path) -> list[str]:
        script = f"mkdir -p {ETC_LIBVIRT} && {binds} && exec {daemon} -d -p {shlex.quote(str(pidfile))}"
        return netns.exec_argv(ns, ["sh", "-c", script])

    started = _start_daemons(argv, ns, state, env)
    _wait_ready(started["libvirtd"], timeout, state / "libvirtd.log")
    return started


# What a host's admin sets so that members of the `libvirt` group use qemu:///system over SSH
# (there is no polkit here to ask).
_LIBVIRTD_CONF_HOST = """\
# Written by the kubitect lab harness (a simulated host's own libvirtd).
unix_sock_group = "libvirt"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
"""
CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")


def write_host_config(hostdir: Path) -> None:
    """A simulated host's /etc/libvirt (group access for its SSH user, no network autostart) and a
    copy of the machine's QEMU capability cache (libvirtd re-probes QEMU, ~8 s of CPU, only when
    the copy is stale). Written before the host's mounts are made: they bind these directories."""
    conf = private_config(hostdir)
    (conf / "libvirtd.conf").write_text(_LIBVIRTD_CONF_HOST)
    if CAPS_CACHE.is_dir():
        dest = hostdir / "var-cache-libvirt/qemu/capabilities"
        dest.mkdir(parents=True, exist_ok=True)
        for xml in CAPS_CACHE.glob("*.xml"):
            shutil.copyfile(xml, dest / xml.name)


def start_in_host(host, hostdir: Path, env: dict[str, str], timeout: float = 120.0) -> dict[str, int]:
    """Starts virtlogd and libvirtd inside a simulated host (`kubitect_core.lab.hostns.HostNs`).

    The host's mount namespace shows its private /etc/libvirt, /run/libvirt, /var/lib, /var/log
    and /var/cache libvirt directories (`write_host_config` first), so several hosts' daemons
    never meet. Returns the daemons' PIDs.
    """
    started = _start_daemons(lambda daemon, pidfile: host.argv([daemon, "-d", "-p", str(pidfile)]),
                             host.netns, hostdir, env)
    _wait_ready(started["libvirtd"], timeout, hostdir / "libvirtd.log", enter=host.argv,
                sock=hostdir / "run-libvirt/libvirt-sock")
    return started


def _start_daemons(argv, where: str, state: Path, env: dict[str, str]) -> dict[str, int]:
    """Starts virtlogd then libvirtd with `argv(daemon, pidfile)`; their PIDs once each wrote one."""
    started: dict[str, int] = {}
    for daemon in ("virtlogd", "libvirtd"):
        pidfile = state / f"{daemon}.pid"
        pidfile.unlink(missing_ok=True)
        denv = {**env, "LIBVIRT_LOG_OUTPUTS": f"3:file:{state / (daemon + '.log')}"}
        proc = subprocess.run(argv(daemon, pidfile), env=denv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{daemon} did not start in {where}: {proc.stderr.strip()}")
        pid = _wait_pid(pidfile, 10.0)
        if pid is None:
            raise RuntimeError(f"{daemon} started in {where} but wrote no live PID to {pidfile}")
        started[daemon] = pid
    return started


def _wait_pid(pidfile: Path, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pid(pidfile)
        if pid:
            return pid
        time.sleep(0.05)
    return None


def _log_tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text().splitlines() if ": error :" in ln]
    except OSError:
        return f"no log at {log}"
    return "\n".join(lines[-5:]) or f"see {log}"


def _wait_ready(pid: int, timeout: float, log: Path, enter=lambda argv: argv,
                sock: Path = LIBVIRT_SOCK) -> None:
    deadline = time.monotonic() + timeout
    env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise RuntimeError(f"libvirtd exited during start-up: {_log_tail(log)}")
        if socket_answers(sock):
            proc = subprocess.run(
                enter(["virsh", "-c", URI, "version"]), capture_output=True, text=True, env=env, timeout=30
            )
            if proc.returncode == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"libvirtd did not answer on {URI} within {timeout:.0f} s")
