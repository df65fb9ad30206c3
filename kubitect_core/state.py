"""A cluster's directory: raw configs, the record of what exists, keys, kubeconfig and the lock.

Layout of `<home>/clusters/<name>/`:

    config.yaml          the raw config of the latest apply/run, byte for byte as given
    applied.yaml         the raw config of the last *successful* apply (the baseline for diffs)
    record.json          per stage: status, timestamps and what its plugins recorded
    ssh/id_ed25519(.pub) the cluster key pair (0600), or a copy of nodeTemplate.ssh.privateKeyPath
    ssh/known_hosts      node host keys, pinned on first contact
    kubeconfig           admin kubeconfig (0600)
    reports/             conformance reports (JSON, JUnit XML)
    events.jsonl         every stage event of every run, for automation and post-mortems

and `<home>/locks/<name>.lock`, held (flock) while a command changes the cluster. The lock lives
outside the cluster directory: destroy removes that directory, and a lock file inside it would
let a process still waiting on the old file and a new one on a fresh file both "hold" the lock.

Raw configs are stored as given and defaults are resolved on read, so that a default added in a
newer kubitect release does not show up as a change the user made (Kubitect issue #216).

Every state file is read through one loader (`read_state_text`, `read_state_json`) that refuses
what kubitect never writes (a directory, a FIFO, a device, binary data, a huge file) with a
`StateFileError` naming the file and the problem, instead of a traceback or a hang; every write
is a temp file (O_EXCL, 0600, random name) + fsync + rename + directory fsync.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from kubitect_core.paths import cluster_dir, clusters_root, lock_path

MAX_STATE_BYTES = 64 << 20  # no state file kubitect writes comes near this
STATUSES = ("never", "running", "completed", "failed", "interrupted", "skipped", "destroyed")


class StateError(Exception):
    """A problem with a cluster's state (a damaged file, a lock held, a key); exit code 1."""


class StateFileError(StateError):
    """A state file kubitect cannot use; the message names the file and what is wrong with it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class LockedError(StateError):
    """Another kubitect process is changing this cluster."""


# reading --------------------------------------------------------------------------------------
def read_state_bytes(path: Path, *, limit: int = MAX_STATE_BYTES) -> bytes | None:
    """The file's bytes, or None when it does not exist.

    Opened non-blocking, without following a symlink, and checked with fstat before reading,
    so a FIFO never hangs and a device (/dev/zero) or directory is refused by name rather than
    read forever. (A user's own file that may be a symlink, like ~/.kube/config, is resolved
    by its caller first.)
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError(path, f"is a symbolic link (to {os.readlink(path)}); kubitect never "
                                       "writes one there and does not follow it") from None
        if isinstance(exc, PermissionError):
            raise StateFileError(path, "cannot be read: permission denied") from None
        raise StateFileError(path, f"cannot be opened: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise StateFileError(path, "is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise StateFileError(path, "is not a regular file (a FIFO, socket or device); kubitect "
                                       "only ever writes regular files there")
        if st.st_size > limit:
            raise StateFileError(path, f"is {st.st_size} bytes, more than kubitect ever writes there "
                                       f"(limit {limit})")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise StateFileError(path, f"grew past {limit} bytes while being read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StateFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_state_text(path: Path, *, limit: int = MAX_STATE_BYTES) -> str | None:
    """The file as UTF-8 text, or None when it does not exist; StateFileError otherwise."""
    raw = read_state_bytes(path, limit=limit)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateFileError(Path(path), f"is not UTF-8 text (binary data at byte {exc.start})") from None


def read_state_json(path: Path, *, limit: int = MAX_STATE_BYTES) -> Any:
    """The file's JSON value, or None when it does not exist; StateFileError otherwise."""
    text = read_state_text(path, limit=limit)
    if text is None:
        return None
    if not text.strip():
        raise StateFileError(Path(path), "is empty (a write was cut short, or the file was truncated)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateFileError(Path(path), f"is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}): "
                                         "the file is truncated or was edited") from None
    except RecursionError:
        raise StateFileError(Path(path), "is not a kubitect state file: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise StateFileError(Path(path), f"is not a kubitect state file: {exc}") from None
    if value is None:  # never written by kubitect; returning None would read as "no file"
        raise StateFileError(Path(path), "holds only `null`, not a kubitect state file")
    return value


# the record's shape ---------------------------------------------------------------------------
class _StageEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal[STATUSES] = "never"  # type: ignore[valid-type]
    data: dict[str, Any] = {}
    ever_completed: bool = False
    reason: str | None = None


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")
    stages: dict[str, _StageEntry] = {}


def check_record(path: Path, data: Any) -> dict[str, Any]:
    """Returns `data` if it has the record's shape, else a StateFileError saying where it differs."""
    if not isinstance(data, dict):
        raise StateFileError(path, f"is not a kubitect record: the top level is {_kind(data)}, "
                                   "not an object with `stages`")
    try:
        _Record.model_validate(data, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise StateFileError(path, f"is not a kubitect record: `{where}` {err['msg'].lower()} "
                                   f"(found {_kind(err.get('input'))})") from None
    except RecursionError:
        raise StateFileError(path, "is not a kubitect record: nested too deeply") from None
    return data


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# writing --------------------------------------------------------------------------------------
def _replace_file(path: Path, raw: bytes, mode: int) -> None:
    """temp file (O_CREAT|O_EXCL, 0600, random name) + fsync + rename + directory fsync.

    The temp file is created by `mkstemp`, which never opens an existing file or follows a
    symlink planted at its name, and is 0600 before the first byte is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Makes a rename in `directory` durable (the new name survives a power cut)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes | str) -> None:
    """Writes a secret atomically, 0600 from the first byte (no window with wider permissions)."""
    _replace_file(Path(path), data.encode() if isinstance(data, str) else data, 0o600)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Writes a file so a crash leaves either the old or the new content, never half of one."""
    _replace_file(Path(path), text.encode(), mode)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ClusterState:
    """The state directory of one cluster (the name is checked: see `kubitect_core.paths`)."""

    home: Path
    name: str

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self._dir = cluster_dir(self.home, self.name)

    @property
    def dir(self) -> Path:
        return self._dir

    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def applied_path(self) -> Path:
        return self.dir / "applied.yaml"

    @property
    def record_path(self) -> Path:
        return self.dir / "record.json"

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def kubeconfig_path(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def reports_dir(self) -> Path:
        return self.dir / "reports"

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def lock_path(self) -> Path:
        return lock_path(self.home, self.name)

    def exists(self) -> bool:
        return self.dir.is_dir()

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    # raw configs --------------------------------------------------------------------------
    def save_config(self, text: str) -> None:
        write_atomic(self.config_path, text)

    def save_applied(self, text: str) -> None:
        write_atomic(self.applied_path, text)

    def applied_text(self) -> str | None:
        return read_state_text(self.applied_path)

    def config_text(self) -> str | None:
        return read_state_text(self.config_path)

    # record ------------------------------------------------------------------------------
    def load_record(self) -> dict[str, Any]:
        """The record; a fresh one when there is none, StateFileError when it is damaged."""
        data = read_state_json(self.record_path)
        if data is None:
            return {"stages": {}}
        check_record(self.record_path, data)
        data.setdefault("stages", {})
        return data

    def save_record(self, record: dict[str, Any]) -> None:
        write_atomic(self.record_path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")

    @staticmethod
    def stage_entry(record: dict[str, Any], stage: str) -> dict[str, Any]:
        return record.setdefault("stages", {}).setdefault(stage, {"status": "never", "data": {}})

    @classmethod
    def mark(cls, record: dict[str, Any], stage: str, status: str) -> None:
        entry = cls.stage_entry(record, stage)
        entry["status"] = status
        entry[f"{status}_at"] = _now()
        if status == "completed":
            entry["ever_completed"] = True

    @staticmethod
    def ever_completed(record: dict[str, Any], stage: str) -> bool:
        return bool(record.get("stages", {}).get(stage, {}).get("ever_completed"))

    def append_event(self, event: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.events_path.open("a") as fh:
            fh.write(json.dumps(event, default=str) + "\n")

    # lock --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, wait: float = 0.0, *, poll: float = 0.2):
        """Holds the cluster lock for a command that changes the cluster.

        flock is released by the kernel when its holder dies, so a crashed run never blocks the
        next one; the PID written into the file only serves the message (and the notice that a
        dead run's lock was broken). The file is never deleted (see the module docstring).
        """
        path = self.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            if not flock_within(fd, wait, poll):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise LockedError(f"cluster '{self.name}' is being changed by another kubitect process "
                                  f"(PID {holder}); wait for it, or pass --wait-lock SECONDS")
            previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
            stale_pid = previous if previous.isdigit() and not alive(int(previous)) else None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield stale_pid
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def lock_holder(self) -> str | None:
        """The PID of the kubitect process changing this cluster now, or None (never blocks)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Deletes the cluster directory (never a symlink's target: see `cluster_dir`)."""
        if self.dir.is_symlink():
            raise StateError(f"{self.dir} is a symbolic link; kubitect does not delete through it")
        shutil.rmtree(self.dir, ignore_errors=True)


def flock_within(fd: int, wait: float, poll: float = 0.2) -> bool:
    """Takes an exclusive flock on `fd`, retrying for `wait` seconds; False if it stayed taken."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cluster_entries(home: Path) -> list[tuple[str, ClusterState | None]]:
    """Every directory in `clusters/`, by name, with its state (None for a name that is not a
    valid cluster name: shown by `list`, never touched)."""
    from kubitect_core.paths import ClusterNameError

    root = clusters_root(home)
    if not root.is_dir():
        return []
    out: list[tuple[str, ClusterState | None]] = []
    for p in sorted(root.iterdir()):
        if p.is_symlink() or not p.is_dir():
            continue
        try:
            out.append((p.name, ClusterState(home, p.name)))
        except ClusterNameError:
            out.append((p.name, None))
    return out


def list_clusters(home: Path) -> list[ClusterState]:
    """The clusters of a home (directories with a valid cluster name)."""
    return [state for _, state in cluster_entries(home) if state is not None]
