"""OpenSSH known_hosts files shared with other programs: read, match, and edit them safely.

Two kinds of file are edited here: the cluster's own pinned files (node and host keys) and the
user's ~/.ssh/known_hosts (`nodeTemplate.ssh.addToKnownHosts`). Both follow OpenSSH's habits so
that ssh(1), ssh-keygen(1) and kubitect can share them:

- additions are appended in place (as ssh(1) does when it learns a key), so a line another
  program appends at the same moment is never lost;
- removals rewrite the file through a temporary file in the same directory and a rename (as
  `ssh-keygen -R` does), keeping the file's mode and owner, and following a symlinked file to its
  target (dotfile managers link ~/.ssh/known_hosts);
- every edit holds an exclusive lock on the file's directory, so concurrent kubitect processes
  (two clusters applied at once) never lose or duplicate each other's lines.

Lines kubitect writes into a user's file carry a comment marker naming the cluster and node,
so exactly those lines, and never a line the user or ssh(1) wrote, are removed later.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from kubitect_core.sdk.lazy import lazy_import

asyncssh = lazy_import("asyncssh")  # loaded on first use (fast start: kubitect_core.sdk.lazy)


SSH_DIR_ENV = "KUBITECT_SSH_DIR"
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))


# --------------------------------------------------------------------------- the user's ssh dir


def user_ssh_dir() -> Path:
    """The user's OpenSSH directory: $KUBITECT_SSH_DIR, else ~/.ssh of $HOME.

    Why overridable: tests (and users who keep a separate SSH setup for kubitect) point it
    elsewhere, so nothing ever reads or writes the real ~/.ssh behind their back.
    """
    env = os.environ.get(SSH_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".ssh"


def _openssh_own_dir() -> Path:
    """Where ssh(1) itself looks: the passwd entry's home, whatever $HOME says."""
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    except KeyError:
        return Path.home() / ".ssh"


def _same_dir(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def openssh_config_args() -> list[str]:
    """Arguments that make ssh(1) read the same client config as kubitect.

    Empty when the user's ssh dir is ssh's own (ssh then reads ~/.ssh/config and the system
    file itself); else `-F <dir>/config` (or `-F /dev/null` when there is none), because
    ssh(1) finds its config through the passwd entry, not through $HOME or our override.
    """
    directory = user_ssh_dir()
    if _same_dir(directory, _openssh_own_dir()):
        return []
    config = directory / "config"
    return ["-F", str(config) if config.is_file() else "/dev/null"]


def client_config_files() -> list[Path]:
    """The OpenSSH client config files ssh(1) would read, in its order (for asyncssh `config=`)."""
    files = []
    config = user_ssh_dir() / "config"
    if config.is_file():
        files.append(config)
    if not openssh_config_args() and SYSTEM_CONFIG.is_file():
        files.append(SYSTEM_CONFIG)
    return files


def user_known_hosts_files() -> list[Path]:
    """The known_hosts files ssh(1) trusts by default (the user's, then the system's)."""
    directory = user_ssh_dir()
    files = [directory / "known_hosts", directory / "known_hosts2"]
    if not openssh_config_args():
        files += list(SYSTEM_KNOWN_HOSTS)
    return [f for f in files if f.is_file()]


def openssh_option(option: str, host: str, timeout: float = 5.0) -> str | None:
    """An option's effective value for `host` as ssh(1) resolves it (`ssh -G`), lower case.

    None when ssh(1) is not installed or cannot evaluate its config. Why ssh itself: options
    like HashKnownHosts are set per Host block or in Include files; only ssh knows the answer.
    """
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    try:
        proc = subprocess.run([ssh, *openssh_config_args(), "-G", "--", host], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    wanted = option.lower()
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == wanted:
            return value.strip().lower()
    return None


# --------------------------------------------------------------------------- lines


def host_pattern(address: str, port: int = 22) -> str:
    """The host field OpenSSH uses for `address:port` (port 22 is written bare)."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: asyncssh.SSHKey | None) -> str:
    """A key's SHA256 fingerprint as ssh(1) prints it; never the key itself."""
    return key.get_fingerprint("sha256") if key is not None else "unknown"


def hashed_name(name: str, salt: bytes | None = None) -> str:
    """OpenSSH's hashed host field (`|1|salt|hmac-sha1(salt, name)`), as `ssh-keygen -H` writes."""
    salt = salt if salt is not None else secrets.token_bytes(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _hashed_field_matches(field: str, name: str) -> bool:
    """Whether a hashed host field (`|1|salt|hash`) is for `name`."""
    try:
        _, _, salt, _digest = field.split("|", 3)
        return hmac.compare_digest(hashed_name(name, base64.b64decode(salt)), field)
    except (ValueError, TypeError):
        return False


def _fields(line: str) -> list[str]:
    text = line.strip()
    if not text or text.startswith("#"):
        return []
    return text.split()


def line_names_host(line: str, name: str) -> bool:
    """Whether a plain key line (no @marker) is for exactly `name` (hashed or not; no wildcards)."""
    return bool(_names_of(line, (name,)))


def line_key(line: str) -> asyncssh.SSHKey | None:
    """The public key of a plain key line, or None."""
    parts = _fields(line)
    if len(parts) < 3 or parts[0].startswith("@"):
        return None
    try:
        return asyncssh.import_public_key(f"{parts[1]} {parts[2]}")
    except (asyncssh.KeyImportError, ValueError):
        return None


def line_comment(line: str) -> str:
    """The comment after the key of a plain key line ("" when none)."""
    parts = _fields(line)
    if len(parts) < 4 or parts[0].startswith("@"):
        return ""
    return " ".join(parts[3:])


def key_line(name: str, key: asyncssh.SSHKey, *, hashed: bool = False, comment: str = "") -> str:
    """One known_hosts line for `name` (without newline); the key's own comment is dropped."""
    algo, data = key.export_public_key("openssh").decode().split()[:2]
    host = hashed_name(name) if hashed else name
    return " ".join(p for p in (host, algo, data, comment) if p)


def keys_for(path: Path, name: str) -> list[asyncssh.SSHKey]:
    """The keys a file holds for exactly `name` (hashed or plain lines; no @cert-authority)."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    keys = []
    for line in text.splitlines():
        if line_names_host(line, name):
            key = line_key(line)
            if key is not None:
                keys.append(key)
    return keys


# --------------------------------------------------------------------------- locked edits


def _target(path: Path) -> Path:
    """The file really edited: a symlinked known_hosts is followed to its target."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[Path]:
    """Holds an exclusive lock for editing `path` (on its directory, so no lock file is left)."""
    target = _target(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield target
    finally:
        os.close(fd)  # closing releases the lock


def _read_lines(target: Path) -> list[str]:
    try:
        return target.read_text(errors="surrogateescape").splitlines(keepends=True)
    except FileNotFoundError:
        return []


def _append(target: Path, lines: Sequence[str], mode: int) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        size = os.fstat(fd).st_size
        prefix = ""
        if size:
            with open(target, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    prefix = "\n"
        os.write(fd, (prefix + "".join(ln + "\n" for ln in lines)).encode(errors="surrogateescape"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _stat_id(target: Path) -> tuple[int, int, int] | None:
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _rewrite(target: Path, lines: Sequence[str], mode: int, read_as: tuple[int, int, int] | None) -> bool:
    """Replaces the file with `lines`, unless it changed since it was read as `read_as` (then
    False: ssh(1) appended meanwhile, and the caller reads again, so that line is not lost)."""
    try:
        st = target.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        owner = None
    tmp = target.with_name(f".{target.name}.kubitect-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, "".join(lines).encode(errors="surrogateescape"))
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if _stat_id(target) != read_as:
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, target)
    with contextlib.suppress(OSError):
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return True


def _open_existing(target: Path) -> int | None:
    try:
        return os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _carry_over(old_fd: int | None, read_as: tuple[int, int, int] | None, target: Path) -> None:
    """Lines ssh(1) appended to the replaced file in the instant before the rename (through a
    descriptor it opened earlier) are appended to the new file, so none is lost."""
    if old_fd is None or read_as is None:
        return
    size = read_as[1]
    extra = b""
    for _ in range(3):  # a writer still finishing its line: look again, briefly
        now = os.fstat(old_fd).st_size
        if now <= size + len(extra):
            break
        extra += os.pread(old_fd, now - size - len(extra), size + len(extra))
    if extra:
        text = extra.decode(errors="surrogateescape")
        _append(target, text.splitlines(), 0o600)


_REWRITE_ATTEMPTS = 20
Transform = Callable[[list[str]], tuple[list[str], list[str]]]


def edit_lines(path: Path, transform: Transform, mode: int = 0o600) -> tuple[int, int]:
    """Edits a known_hosts file under the lock; returns (lines removed, lines added).

    `transform(lines)` returns (kept, new): `kept` is the existing lines minus those to remove
    (every kept line stays byte for byte), `new` the lines to append (no newline). It runs while
    the lock is held, so two processes never both add the same line, and may run again when
    ssh(1) appended to the file during a rewrite. A new file gets `mode`.
    """
    with locked(path) as target:
        for _attempt in range(_REWRITE_ATTEMPTS):
            read_as = _stat_id(target)
            lines = _read_lines(target)
            kept, new = transform(lines)
            removed = len(lines) - len(kept)
            if not removed:
                if new:
                    _append(target, new, mode)
                return 0, len(new)
            kept = list(kept)
            if new:
                if kept and not kept[-1].endswith("\n"):
                    kept[-1] += "\n"
                kept += [ln + "\n" for ln in new]
            old_fd = _open_existing(target)
            try:
                if _rewrite(target, kept, mode, read_as):
                    _carry_over(old_fd, read_as, target)
                    return removed, len(new)
            finally:
                if old_fd is not None:
                    os.close(old_fd)
        raise OSError(f"{target} kept changing while kubitect edited it; try again")


def edit(path: Path, *, drop: Callable[[str], bool] | None = None,
         add: Callable[[list[str]], Iterable[str]] | None = None, mode: int = 0o600) -> tuple[int, int]:
    """`edit_lines` for the common case: `drop(line)` says which lines go, `add(kept)` what to append."""
    def transform(lines: list[str]) -> tuple[list[str], list[str]]:
        kept = [ln for ln in lines if not (drop and drop(ln))]
        return kept, list(add(kept)) if add else []

    return edit_lines(path, transform, mode)


def read_lines(path: Path) -> list[str]:
    """A file's lines with their endings (empty when it does not exist), for dry runs."""
    return _read_lines(_target(Path(path)))


# --------------------------------------------------------------------------- pinned files


def pin(path: Path, name: str, key: asyncssh.SSHKey, *, replace: bool = False) -> bool:
    """Records `key` for `name` in a pinned file (0600); True if the file changed.

    With replace=True every other key pinned for `name` goes (kubitect made the new key itself,
    so an older one is known to be stale); otherwise keys are only ever added.
    """
    return pin_many(path, {name: key}, replace=replace)


def _names_of(line: str, names: Collection[str]) -> list[str]:
    """Which of `names` (a set or mapping: looked up, not scanned, for a plain host field) a plain
    key line is for, hashed or not; no wildcards."""
    parts = _fields(line)
    if len(parts) < 3 or parts[0].startswith("@"):
        return []
    if not parts[0].startswith("|1|"):
        return [n for n in parts[0].split(",") if n in names]
    return [n for n in names if _hashed_field_matches(parts[0], n)]


def pin_many(path: Path, keys: Mapping[str, asyncssh.SSHKey], *, replace: bool = False) -> bool:
    """`pin` for many names in one rewrite; True if the file changed.

    Why one rewrite: pinning the nodes of a large cluster one edit at a time scanned and fsynced the
    whole file once per node."""
    if not keys:
        return False

    def drop(line: str) -> bool:
        if not replace:
            return False
        names = _names_of(line, keys)
        if not names:
            return False
        old = line_key(line)
        return old is None or any(old.public_data != keys[n].public_data for n in names)

    def add(kept: list[str]) -> list[str]:
        have = set()
        for ln in kept:
            names = _names_of(ln, keys)
            if names and (k := line_key(ln)) is not None:
                have.update(n for n in names if k.public_data == keys[n].public_data)
        return [key_line(n, key) for n, key in keys.items() if n not in have]

    removed, added = edit(path, drop=drop, add=add)
    return bool(removed or added)


def forget(path: Path, name: str) -> bool:
    """Removes every key pinned for exactly `name`; True if one was removed."""
    return forget_many(path, [name]) > 0


def forget_many(path: Path, names: Iterable[str]) -> int:
    """Removes every key pinned for any of `names` in one rewrite; how many lines went.

    Why one rewrite: removing 1,000 nodes one edit at a time rewrote (and fsynced) the file 1,000
    times, each a scan of every line."""
    wanted = set(names)
    if not wanted or not Path(path).exists():
        return 0
    removed, _ = edit(path, drop=lambda line: bool(_names_of(line, wanted)))
    return removed
