"""What a run did on each node, kept: `<cluster dir>/logs/<time>-<command>.log`.

When a node step fails, its error message quotes a few hundred characters; the run log keeps the
rest: every command run on every node (through `kubitect_core.remote`), with the node, the stage,
the exit status, the full output and the timings, plus every stage event and, for a failure,
the Python traceback. Secrets are redacted (`kubitect_core.redact`) before anything is written;
what a command reads on stdin and what `get` fetches are never written, only their sizes.

The engine opens one log per command that changes or checks a cluster (apply, run, verify,
destroy) and installs it for the duration (`installed`): remote.py calls `remote_command`, a
no-op when no log is installed, so plugins and tests that use remote.py directly are unaffected.
`--debug` passes a `live` callback that shows each record as it is written.

Logs are bounded: each stream of a command keeps its first and last part, a log file stops
taking output at `MAX_LOG_BYTES` (headers still go in), and a cluster keeps its newest
`KEEP_LOGS` logs within `KEEP_BYTES`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tarfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubitect_core.hookspecs import hookimpl
from kubitect_core.redact import redact

KEEP_LOGS = 20  # newest logs kept per cluster
KEEP_BYTES = 128 << 20  # and at most this much of them (the newest log is always kept)
MAX_LOG_BYTES = 32 << 20  # one log file: beyond this, only command headers are written
STREAM_HEAD = 128 << 10  # of one command's stdout or stderr: the first ...
STREAM_TAIL = 384 << 10  # ... and the last bytes are kept
LOG_SUFFIX = ".log"

_current: ContextVar[RunLog | None] = ContextVar("kubitect_run_log", default=None)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bounded(text: str) -> str:
    if len(text) <= STREAM_HEAD + STREAM_TAIL:
        return text
    cut = len(text) - STREAM_HEAD - STREAM_TAIL
    return f"{text[:STREAM_HEAD]}\n[... {cut} characters omitted ...]\n{text[-STREAM_TAIL:]}"


def _indented(label: str, text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    return "".join(f"    {label} | {line}\n" for line in lines)


class RunLog:
    """One run's log file. Writing never fails the run: an I/O error disables the log once, loudly."""

    def __init__(self, path: Path, *, live: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.live = live
        self.warn = warn or (lambda message: None)
        self.stage = ""
        self.size = 0
        self.full = False
        self._fd: int | None = None

    # file ------------------------------------------------------------------------------------
    def open(self, header: dict[str, Any]) -> RunLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        lines = [f"# kubitect run log: {' '.join(f'{k}={v}' for k, v in header.items())}",
                 "# secrets are redacted; input fed to commands and files fetched from nodes are never written",
                 ""]
        self._write("\n".join(lines) + "\n")
        return self

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _write(self, text: str, *, body: bool = False) -> None:
        """Appends `text`, redacted. Output (`body`) stops at MAX_LOG_BYTES; the lines saying what
        ran and how it ended go on until twice that."""
        text = redact(text)
        if self.live is not None:
            self.live(text.rstrip("\n"))
        if self._fd is None:
            return
        data = text.encode("utf-8", "replace")
        if self.size + len(data) > MAX_LOG_BYTES * (1 if body else 2):
            if not body or self.full:
                return
            self.full = True
            data = f"[log size limit of {MAX_LOG_BYTES} bytes reached: only command lines from here on]\n".encode()
        try:
            os.write(self._fd, data)
            self.size += len(data)
        except OSError as exc:
            self.close()
            self.warn(f"warning: the run log {self.path} cannot be written any more ({exc.strerror or exc})")

    # records ---------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """A line of what happened (stage boundaries, progress, errors), with time and stage."""
        where = f"[{self.stage}] " if self.stage else ""
        first, *rest = text.rstrip("\n").splitlines() or [""]
        self._write(f"{_now()} {where}{first}\n" + _indented("     ", "\n".join(rest)))

    def command_started(self, node: str, command: str, *, sudo: bool, stdin: int | None) -> None:
        extra = ", ".join(x for x in ("sudo" if sudo else "", f"stdin {stdin} bytes not logged" if stdin else "") if x)
        self.note(f"{node} $ {command}" + (f"   ({extra})" if extra else ""))

    def command_finished(self, node: str, command: str, *, seconds: float, status: int | None = None,
                         stdout: str = "", stderr: str = "", fetched: int | None = None,
                         error: str | None = None) -> None:
        short = command if len(command) <= 120 else command[:117] + "..."
        if error is not None:
            head = f"{node} ! {short}: {error} (after {seconds:.2f} s)"
        else:
            head = f"{node} = exit {status} after {seconds:.2f} s: {short}"
        body = ""
        if fetched is not None:
            body += f"    stdout | ({fetched} bytes fetched, not logged)\n"
        elif stdout.strip():
            body += _indented("stdout", _bounded(stdout))
        if stderr.strip():
            body += _indented("stderr", _bounded(stderr))
        self.note(head)
        if body:
            self._write(body, body=True)

    def exception(self, exc: BaseException) -> None:
        """The traceback of a stage failure: what a bug report needs, never shown to the user."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.note("traceback of the failure:\n" + text)

    # stage events (the log is a pluggy observer while installed) --------------------------------
    @hookimpl
    def kubitect_stage_started(self, cluster: str, stage: str, action: str) -> None:
        self.stage = stage
        self.note(f"stage {stage} {action} started")

    @hookimpl
    def kubitect_stage_progress(self, cluster: str, stage: str, subject: str, message: str) -> None:
        self.note(f"{subject}: {message}")

    @hookimpl
    def kubitect_stage_finished(self, cluster, stage, action, ok, seconds, changes, error) -> None:
        if ok:
            done = [str(c) for c in changes if getattr(c, "action", "keep") != "keep"]
            self.note(f"stage {stage} {action} {'ended' if not error else error} after {seconds:.1f} s"
                      + ("".join(f"\n{c}" for c in done)))
        else:
            self.note(f"stage {stage} {action} FAILED after {seconds:.1f} s:\n{error}")
        self.stage = ""


# --------------------------------------------------------------------------- opening and pruning


def log_files(logs_dir: Path) -> list[Path]:
    """A cluster's run logs, oldest first (names start with their UTC time)."""
    if not logs_dir.is_dir():
        return []
    return sorted(p for p in logs_dir.iterdir() if p.name.endswith(LOG_SUFFIX) and p.is_file()
                  and not p.is_symlink())


def prune(logs_dir: Path, keep: int = KEEP_LOGS, keep_bytes: int = KEEP_BYTES) -> list[Path]:
    """Deletes the oldest logs beyond `keep` files or `keep_bytes` bytes; the newest always stays."""
    files = log_files(logs_dir)
    removed, total = [], 0
    for i, path in enumerate(reversed(files)):
        try:
            total += path.stat().st_size
        except OSError:
            continue
        if i > 0 and (i >= keep or total > keep_bytes):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def open_log(logs_dir: Path, command: str, *, cluster: str, live: Callable[[str], None] | None = None,
             warn: Callable[[str], None] | None = None) -> RunLog:
    """A new log `<logs_dir>/<UTC time>-<command>.log` (0600, directory 0700); older ones pruned."""
    from kubitect_core import __version__

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    for attempt in range(100):
        name = f"{stamp}-{command}{'' if attempt == 0 else f'-{attempt}'}{LOG_SUFFIX}"
        log = RunLog(logs_dir / name, live=live, warn=warn)
        try:
            log.open({"cluster": cluster, "command": command, "kubitect": __version__, "pid": os.getpid(),
                      "started": _now(), "argv": " ".join(sys.argv[1:])})
        except FileExistsError:
            continue
        prune(logs_dir)
        return log
    raise FileExistsError(f"cannot create a run log in {logs_dir}")


@contextlib.contextmanager
def installed(log: RunLog | None) -> Iterator[RunLog | None]:
    """Makes `log` the one remote.py writes to, in this task and the tasks it starts."""
    token = _current.set(log)
    try:
        yield log
    finally:
        _current.reset(token)


def current() -> RunLog | None:
    return _current.get()


# --------------------------------------------------------------------------- the remote.py hook


class _Command:
    def __init__(self, log: RunLog | None, node: str, command: str) -> None:
        self.log, self.node, self.command = log, node, command
        self.t0 = time.monotonic()
        self.done = False

    def finished(self, status: int | None, stdout: Any = "", stderr: Any = "", *, binary: bool = False) -> None:
        """The command's result; for a binary transfer (`get`/`put`) stdout is counted, not logged."""
        self.done = True
        if self.log is None:
            return
        out = _text(stdout)
        self.log.command_finished(self.node, self.command, seconds=time.monotonic() - self.t0, status=status,
                                  stdout="" if binary else out, stderr=_text(stderr),
                                  fetched=len(stdout or b"") if binary and stdout else None)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value or "")


@contextlib.contextmanager
def remote_command(node: str, command: str, *, sudo: bool = False, stdin: Any = None) -> Iterator[_Command]:
    """Brackets one command on a node: logs it when it starts, and its result or error when done."""
    log = _current.get()
    entry = _Command(log, node, command)
    if log is not None:
        size = len(stdin) if isinstance(stdin, str | bytes | bytearray) else None
        log.command_started(node, command, sudo=sudo, stdin=size)
    try:
        yield entry
    except BaseException as exc:
        if log is not None and not entry.done:
            reason = "interrupted" if not isinstance(exc, Exception) else (str(exc) or type(exc).__name__)
            log.command_finished(node, command, seconds=time.monotonic() - entry.t0, error=reason)
        raise


def log_exception(exc: BaseException) -> None:
    """Writes a failure's traceback into the installed log, if any."""
    log = _current.get()
    if log is not None:
        log.exception(exc)


# --------------------------------------------------------------------------- export


def bundle(cluster_dir: Path, dest: Any, *, prefix: str) -> list[str]:
    """Writes the cluster's run logs and event log as a tar.gz to `dest` (a path or a binary
    stream); returns the member names. Entries are 0600 and owned by no one in particular."""
    members = [p for p in log_files(cluster_dir / "logs")]
    events = cluster_dir / "events.jsonl"
    if events.is_file() and not events.is_symlink():
        members.append(events)
    names = []
    kwargs = {"fileobj": dest} if not isinstance(dest, str | os.PathLike) else {"name": dest}
    with tarfile.open(mode="w:gz", **kwargs) as tar:
        for path in members:
            rel = path.relative_to(cluster_dir)
            info = tar.gettarinfo(str(path), arcname=f"{prefix}/{rel}")
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)
            names.append(info.name)
    return names
