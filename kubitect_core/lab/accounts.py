"""Private account files for a simulated host: its SSH user, the `libvirt` group, `libvirt-qemu`.

A real host's admin creates the user (the seed's `kubitect`) and puts it in the `libvirt` group
so it may use `qemu:///system`. The lab does the same in copies of /etc/passwd, /etc/group and
/etc/shadow that only the host's own processes see (bind mounts in its mount namespace,
`kubitect_core.lab.hostns`); the machine's files are never edited.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

LIBVIRT_GROUP = "libvirt"
QEMU_USER = "libvirt-qemu"
FIRST_LAB_ID = 2000
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class HostUser:
    """The SSH user of a simulated host, as it exists inside that host only."""

    name: str
    uid: int
    gid: int
    home: Path  # a directory of the host's own, on the machine's disk


def _ids(lines: list[str]) -> set[int]:
    out = set()
    for line in lines:
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            out.add(int(parts[2]))
    return out


def _names(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in lines if line}


def free_id(taken: set[int], start: int = FIRST_LAB_ID) -> int:
    """The first id from `start` that no machine account uses."""
    n = start
    while n in taken:
        n += 1
    return n


def write_accounts(etc: Path, user: str, home: Path, *, source: Path = Path("/etc")) -> HostUser:
    """Writes passwd, group and shadow for one host into `etc`: the machine's entries plus `user`
    (key-only login, shell /bin/sh, member of `libvirt`), the `libvirt` group, and the
    `libvirt-qemu` user Debian's libvirtd looks up at start-up. Returns the user.

    An existing machine account of the same name is shadowed by the host's own (a different
    host is a different machine): its line is replaced in the copy.
    """
    if not USER_RE.fullmatch(user) or user == "root":
        raise ValueError(f"lab host user {user!r}: must be a non-root login name ([a-z_][a-z0-9_-]*, "
                         "at most 32 characters)")
    etc.mkdir(parents=True, exist_ok=True)
    passwd = [ln for ln in (source / "passwd").read_text().splitlines() if ln and not ln.startswith(f"{user}:")]
    group = [ln for ln in (source / "group").read_text().splitlines() if ln and not ln.startswith(f"{user}:")]
    shadow_src = source / "shadow"
    shadow = [ln for ln in (shadow_src.read_text().splitlines() if shadow_src.exists() else [])
              if ln and not ln.startswith(f"{user}:")]
    uid = free_id(_ids(passwd) | _ids(group))
    passwd.append(f"{user}:x:{uid}:{uid}:kubitect lab host user:{home}:/bin/sh")
    group.append(f"{user}:x:{uid}:")
    shadow.append(f"{user}:*:19000:0:99999:7:::")  # no password: key-only
    if QEMU_USER not in _names(passwd):
        qid = free_id(_ids(passwd) | _ids(group), 64055)
        passwd.append(f"{QEMU_USER}:x:{qid}:{qid}:Libvirt Qemu (kubitect lab):/var/lib/libvirt:/usr/sbin/nologin")
        group.append(f"{QEMU_USER}:x:{qid}:")
    for i, line in enumerate(group):
        if line.startswith(f"{LIBVIRT_GROUP}:"):
            members = [m for m in line.rsplit(":", 1)[1].split(",") if m]
            group[i] = line.rsplit(":", 1)[0] + ":" + ",".join([*members, user])
            break
    else:
        gid = free_id(_ids(passwd) | _ids(group), FIRST_LAB_ID + 500)
        group.append(f"{LIBVIRT_GROUP}:x:{gid}:{user}")
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")
    (etc / "shadow").write_text("\n".join(shadow) + "\n")
    os.chmod(etc / "passwd", 0o644)
    os.chmod(etc / "group", 0o644)
    os.chmod(etc / "shadow", 0o640)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)
    os.chmod(home, 0o755)
    return HostUser(user, uid, uid, home)


def authorize_key(user: HostUser, public_key: str) -> Path:
    """Puts `public_key` in the user's ~/.ssh/authorized_keys (owned by the user, 0600)."""
    ssh = user.home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    keys = ssh / "authorized_keys"
    keys.write_text(public_key.strip() + "\n")
    for path, mode in ((ssh, 0o700), (keys, 0o600)):
        os.chown(path, user.uid, user.gid)
        os.chmod(path, mode)
    return keys
