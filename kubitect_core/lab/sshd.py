"""The sshd of a simulated host: its own host key and config, public-key logins of one user only.

It runs inside the host (`HostNs.argv`), so a login session sees the host's network, mounts and
libvirtd: `qemu+ssh://kubitect@10.10.0.5/system` from the workstation is exactly what it is on a
real site.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kubitect_core.lab.hostns import HostNs

SSHD = "/usr/sbin/sshd"


def write_config(workdir: Path, *, listen: str, port: int, user: str) -> Path:
    """Host key (ed25519, new per lab) and an sshd_config admitting only `user`, keys only."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kubitect-lab-host", "-f", str(key)],
                       check=True, capture_output=True)
    config = workdir / "sshd_config"
    config.write_text(
        "# Written by the kubitect lab harness.\n"
        f"ListenAddress {listen}:{port}\n"
        f"HostKey {key}\n"
        f"PidFile {workdir / 'sshd.pid'}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin no\n"
        f"AllowUsers {user}\n"
        "LogLevel VERBOSE\n"
    )
    return config


def host_public_key(workdir: Path) -> str:
    """The host key's public half (`ssh-ed25519 AAAA...`), e.g. for a known_hosts line."""
    return (workdir / "ssh_host_ed25519_key.pub").read_text().split(" kubitect-lab-host")[0].strip()


def start(host: HostNs, workdir: Path, env: dict[str, str], *, listen: str, port: int,
          timeout: float = 10.0) -> int:
    """Starts sshd inside `host` (it daemonizes) and waits until it accepts TCP; returns its PID."""
    config = workdir / "sshd_config"
    pidfile = workdir / "sshd.pid"
    pidfile.unlink(missing_ok=True)
    log = workdir / "sshd.log"
    proc = host.run([SSHD, "-f", str(config), "-E", str(log)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sshd did not start in {host.netns}: {proc.stderr.strip() or proc.stdout.strip()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists() and _accepts(host, listen, port):
            return int(pidfile.read_text().strip())
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
    raise RuntimeError(f"sshd in {host.netns} does not accept connections on {listen}:{port}: {tail}")


def _accepts(host: HostNs, address: str, port: int) -> bool:
    code = (f"import socket,sys\ntry:\n socket.create_connection(({address!r},{port}),1).close()\n"
            "except OSError:\n sys.exit(1)\n")
    return host.run(["python3", "-c", code], capture_output=True).returncode == 0

