"""The cluster's admin kubeconfig: renamed after the cluster, stored 0600, merged into ~/.kube/config.

Installers fetch the admin kubeconfig from the first control plane (kubeadm's
/etc/kubernetes/admin.conf names everything `kubernetes`/`kubernetes-admin`, k3s's k3s.yaml names
everything `default` and points at 127.0.0.1). `rename` turns either into one cluster, one user
and one context all named after the Kubitect cluster, with the server at the control-plane
endpoint.

`merge_into` / `remove_from` edit a user's kubeconfig in Python (PyYAML; no kubectl). The user's
file holds entries other tools wrote, so:
- merging never replaces an entry kubitect did not write: an entry of the same name is replaced
  only if it is byte-for-byte (as parsed) what kubitect merged last time, recorded in a *receipt*
  (names and SHA-256 of each entry) that the caller keeps in the cluster's record; otherwise the
  merge is refused naming the entry, and the user can merge under another name;
- removal takes exactly the entries the receipt names *and* whose content is still what was
  merged; an entry changed since is left in place and reported;
- the file is locked while it is read, changed and written: kubectl's own protocol
  (`<file>.lock`, created O_EXCL) so kubectl and kubitect never interleave, and a flock on the
  directory so that two kubitect processes queue rather than fail;
- a parse error never echoes the file's text (it may hold tokens): only line, column and a
  redacted reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubitect_core.sdk.lazy import lazy_import
from kubitect_core.state import alive, flock_within, write_private

yaml = lazy_import("yaml")  # PyYAML loads when a kubeconfig is first read or written, not at start-up

SECTIONS = ("clusters", "users", "contexts")
RECEIPT_KEY = "kubeconfig_merge"  # where a stage record keeps the receipt (destroy looks for it)
LOCK_TIMEOUT = 30.0
_ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._:-]{0,252}")


def _loader() -> Any:
    """libyaml when present: a kubeconfig with a hundred clusters parses in milliseconds, not a second."""
    return getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


def _dumper() -> Any:
    return getattr(yaml, "CSafeDumper", None) or yaml.SafeDumper


class KubeconfigError(Exception):
    """A kubeconfig is not what it must be (not YAML, not a Config, no cluster in it)."""


class KubeconfigConflict(KubeconfigError):
    """The user's kubeconfig has an entry of the same name that kubitect did not write."""


def endpoint_url(endpoint: str, port: int = 6443) -> str:
    """`https://endpoint:6443`, bracketing an IPv6 address, so every caller writes the same URL."""
    host = f"[{endpoint}]" if ":" in endpoint and not endpoint.startswith("[") else endpoint
    return f"https://{host}:{port}"


def _redact(text: str) -> str:
    """A YAML error's reason without anything quoted from the file (it may be part of a token)."""
    return re.sub(r"(['\"]).{2,}?\1", "'…'", str(text or "")).strip()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"is not valid YAML{where}: {_redact(problem)}"


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_loader()) if text.strip() else {}  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{what} {_yaml_problem(exc)}") from None
    except RecursionError:
        raise KubeconfigError(f"{what} is not a kubeconfig: nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KubeconfigError(f"{what} is not a kubeconfig (top level is {type(data).__name__}, not a mapping)")
    for section in SECTIONS:
        value = data.get(section)
        if value is None:
            data[section] = []
        elif not isinstance(value, list):
            raise KubeconfigError(f"{what}: `{section}` must be a list")
    return data


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_dumper(), default_flow_style=False, sort_keys=False)


def _digest(entry: Any) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


def rename(text: str, cluster: str, endpoint: str | None = None, port: int = 6443) -> str:
    """One cluster, user and context named `cluster`, the server at the endpoint.

    Why: the fetched admin.conf uses generic names (`kubernetes`, `default`) that collide
    between clusters in one ~/.kube/config, and k3s points at 127.0.0.1, which only works on the
    node itself. Only the first cluster/user of the fetched file are kept (an installer's admin
    kubeconfig has exactly one of each).
    """
    data = _load(text, "the fetched kubeconfig")
    if not data["clusters"] or not data["users"]:
        raise KubeconfigError("the fetched kubeconfig has no cluster or no user entry")
    cluster_entry = dict(data["clusters"][0].get("cluster") or {})
    if endpoint:
        cluster_entry["server"] = endpoint_url(endpoint, port)
    user_entry = dict(data["users"][0].get("user") or {})
    out = {
        "apiVersion": data.get("apiVersion", "v1"),
        "kind": data.get("kind", "Config"),
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": cluster, "user": user_entry}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
        "preferences": data.get("preferences") or {},
    }
    return _dump(out)


def store(path: Path, text: str) -> Path:
    """Writes the kubeconfig 0600 from the first byte: it holds the cluster-admin credentials."""
    write_private(Path(path), text)
    return Path(path)


# locking ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT):
    """Holds `path` for a read-modify-write, against kubectl and other kubitect processes.

    kubectl (client-go) creates `<path>.lock` with O_EXCL and fails when it exists; kubitect
    creates the same file, so neither overwrites the other's change. Two kubitect processes
    queue on a flock of the directory first, which also makes it safe to remove a `.lock` left
    by a kubitect process that died (its PID is in the file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + timeout
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not flock_within(dfd, timeout, poll=0.02):
            raise KubeconfigError(f"{path} is being changed by another kubitect process; try again")
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
                os.write(fd, f"kubitect {os.getpid()}\n".encode())
                os.close(fd)
                break
            except FileExistsError:
                if _stale_kubitect_lock(lock):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)
                    continue
                if time.monotonic() >= deadline:
                    raise KubeconfigError(f"{lock} exists: another program (kubectl?) is changing {path}. "
                                          f"If none is, remove {lock} and try again.") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
    finally:
        os.close(dfd)  # releases the flock


def _stale_kubitect_lock(lock: Path) -> bool:
    try:
        words = lock.read_text(errors="replace").split()
    except OSError:
        return False
    return len(words) == 2 and words[0] == "kubitect" and words[1].isdigit() and not alive(int(words[1]))


# merge / remove -----------------------------------------------------------------------------------
@dataclass
class MergeResult:
    """What `merge_into` did: the receipt to record, and whether the file changed."""

    receipt: dict[str, Any]
    changed: bool


@dataclass
class Removal:
    """What `remove_from` did: entries removed, and entries left in place with the reason."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed)


def check_entry_name(name: str) -> str:
    """A name for merged entries: what kubectl users type (`kubectl --context NAME`)."""
    if not _ENTRY_NAME.fullmatch(name or ""):
        raise KubeconfigError(f"'{name}' cannot name a kubeconfig entry: use letters, digits and "
                              "'-', '_', '.', '@', ':' (starting with a letter or digit)")
    return name


def _real(path: Path) -> Path:
    """The file to edit: a symlinked ~/.kube/config (dotfiles) is edited where it points."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _owned(existing: dict, section: str, name: str, file: Path, receipt: dict | None) -> bool:
    if not receipt or receipt.get("file") != str(file) or receipt.get("name") != name:
        return False
    return receipt.get("sha256", {}).get(section) == _digest(existing)


def merge_into(user_kubeconfig: Path, text: str, cluster: str, *, name: str | None = None,
               receipt: dict[str, Any] | None = None) -> MergeResult:
    """Adds the cluster's entries to a user's kubeconfig (named `name`, default the cluster's
    name) and makes its context current; returns the receipt to keep for `remove_from`.

    `receipt` is the one the previous merge returned: entries it names, unchanged since, are
    kubitect's and may be replaced (a re-apply with new certificates). An entry of the same
    name that kubitect did not write raises KubeconfigConflict naming it. Other entries are kept
    as they are, in their order.
    """
    name = check_entry_name(name or cluster)
    path = _real(user_kubeconfig)
    new = _load(text, "the cluster kubeconfig")
    mine = {s: [e for e in new[s] if isinstance(e, dict) and e.get("name") == cluster] for s in SECTIONS}
    if not all(mine.values()):
        raise KubeconfigError(f"the cluster kubeconfig has no cluster/user/context named '{cluster}' "
                              "(rename it first)")
    wanted = {
        "clusters": {"name": name, "cluster": mine["clusters"][0].get("cluster") or {}},
        "users": {"name": name, "user": mine["users"][0].get("user") or {}},
        "contexts": {"name": name, "context": {**(mine["contexts"][0].get("context") or {}),
                                               "cluster": name, "user": name}},
    }
    if receipt and receipt.get("file") != str(path):
        remove_from(receipt)  # merged into another file before ($KUBECONFIG changed): move it
        receipt = None
    with locked(path):
        if receipt and receipt.get("name") != name:
            _remove_owned(receipt)  # merged under another name before: rename it
            receipt = None
        old_text = _read(path)
        data = _load(old_text, str(path))
        for section in SECTIONS:
            for entry in data[section]:
                if isinstance(entry, dict) and entry.get("name") == name and \
                        _digest(entry) != _digest(wanted[section]) and \
                        not _owned(entry, section, name, path, receipt):
                    raise KubeconfigConflict(
                        f"{path} already has a {section[:-1]} named '{name}' that kubitect did not write "
                        f"(or that was changed since); kubitect does not replace it. Merge under another "
                        f"name with `kubitect apply --kubeconfig-name NAME`, or rename that entry.")
        previous = data.get("current-context") or None
        data.setdefault("apiVersion", "v1")
        data.setdefault("kind", "Config")
        for section in SECTIONS:
            kept = [e for e in data[section] if not (isinstance(e, dict) and e.get("name") == name)]
            data[section] = [*kept, wanted[section]]
        data["current-context"] = name
        out = _dump(data)
        if receipt and previous == name:
            previous = receipt.get("previous_context")
        new_receipt = {"file": str(path), "name": name,
                       "sha256": {s: _digest(wanted[s]) for s in SECTIONS},
                       "previous_context": previous if previous != name else None}
        if out == old_text:
            return MergeResult(new_receipt, False)
        write_private(path, out)
        return MergeResult(new_receipt, True)


def remove_from(receipt: dict[str, Any]) -> Removal:
    """Removes exactly the entries a merge receipt names, if they are still what was merged.

    `current-context` changes only when it points at the removed context: it goes back to the
    context that was current before the merge if that still exists, else it is cleared. A user
    who switched to another cluster meanwhile keeps it.
    """
    path = Path(receipt["file"])
    if not path.exists():
        return Removal()
    with locked(path):
        return _remove_owned(receipt)


def _remove_owned(receipt: dict[str, Any]) -> Removal:
    path, name = Path(receipt["file"]), receipt.get("name")
    result = Removal()
    text = _read(path)
    if text is None:
        return result
    data = _load(text, str(path))
    for section in SECTIONS:
        kept = []
        for entry in data[section]:
            if isinstance(entry, dict) and entry.get("name") == name:
                if _owned(entry, section, name, path, receipt):
                    result.removed.append(f"{section[:-1]} {name}")
                    continue
                result.kept.append(f"{section[:-1]} {name} (changed since kubitect merged it)")
            kept.append(entry)
        data[section] = kept
    contexts = {c.get("name") for c in data["contexts"] if isinstance(c, dict)}
    if data.get("current-context") == name and name not in contexts:
        restore = receipt.get("previous_context")
        data["current-context"] = restore if restore and restore in contexts else ""
    if result.removed:
        write_private(path, _dump(data))
    return result


def _read(path: Path) -> str | None:
    from kubitect_core.state import StateFileError, read_state_text

    try:
        return read_state_text(path) or ""
    except StateFileError as exc:
        raise KubeconfigError(str(exc)) from None


def current_context(user_kubeconfig: Path) -> str | None:
    """The kubeconfig's current-context (None when the file or the key is missing or unreadable)."""
    path = Path(user_kubeconfig).expanduser()
    try:
        return _load(_read(path) or "", str(path)).get("current-context") or None
    except (OSError, KubeconfigError):
        return None


def default_user_kubeconfig() -> Path:
    """`$KUBECONFIG`'s first entry when set, else ~/.kube/config: where kubectl looks first."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"
