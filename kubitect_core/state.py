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
    lock                 held (flock) while a command changes the cluster

Raw configs are stored as given and defaults are resolved on read, so that a default added in a
newer kubitect release does not show up as a change the user made (Kubitect issue #216).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubitect_core.paths import cluster_dir


class LockedError(Exception):
    """Another kubitect process is changing this cluster."""


def write_private(path: Path, data: bytes | str) -> None:
    """Writes a secret: created 0600 from the first byte (no window with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    """Writes a file so a crash leaves either the old or the new content, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ClusterState:
    """The state directory of one cluster."""

    home: Path
    name: str

    @property
    def dir(self) -> Path:
        return cluster_dir(self.home, self.name)

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
        return self.applied_path.read_text() if self.applied_path.exists() else None

    def config_text(self) -> str | None:
        return self.config_path.read_text() if self.config_path.exists() else None

    # record ------------------------------------------------------------------------------
    def load_record(self) -> dict[str, Any]:
        if not self.record_path.exists():
            return {"stages": {}}
        return json.loads(self.record_path.read_text())

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
        dead run's lock was broken).
        """
        self.create()
        path = self.dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                        raise LockedError(
                            f"cluster '{self.name}' is being changed by another kubitect process "
                            f"(PID {holder}); wait for it, or pass --wait-lock SECONDS"
                        ) from None
                    time.sleep(poll)
            previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
            stale_pid = previous if previous.isdigit() and not _alive(int(previous)) else None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield stale_pid
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_clusters(home: Path) -> list[ClusterState]:
    root = home / "clusters"
    if not root.is_dir():
        return []
    return [ClusterState(home, p.name) for p in sorted(root.iterdir()) if p.is_dir()]
