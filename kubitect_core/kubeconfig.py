"""The cluster's admin kubeconfig: renamed after the cluster, stored 0600, merged into ~/.kube/config.

Installers fetch the admin kubeconfig from the first control plane (kubeadm's
/etc/kubernetes/admin.conf names everything `kubernetes`/`kubernetes-admin`, k3s's k3s.yaml names
everything `default` and points at 127.0.0.1). `rename` turns either into one cluster, one user
and one context all named after the Kubitect cluster, with the server at the control-plane
endpoint. `merge_into` / `remove_from` edit a user's kubeconfig in Python (PyYAML; no kubectl),
touching only the entries of that one cluster, so other clusters a user keeps there survive both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from kubitect_core.state import write_private

SECTIONS = ("clusters", "users", "contexts")


class KubeconfigError(Exception):
    """A kubeconfig is not what it must be (not YAML, not a Config, no cluster in it)."""


def endpoint_url(endpoint: str, port: int = 6443) -> str:
    """`https://endpoint:6443`, bracketing an IPv6 address, so every caller writes the same URL."""
    host = f"[{endpoint}]" if ":" in endpoint and not endpoint.startswith("[") else endpoint
    return f"https://{host}:{port}"


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{what} is not valid YAML: {exc}") from None
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
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


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


def _replace_named(entries: list[dict], new: dict) -> list[dict]:
    out = [e for e in entries if not (isinstance(e, dict) and e.get("name") == new["name"])]
    out.append(new)
    return out


def merge_into(user_kubeconfig: Path, text: str, cluster: str) -> bool:
    """Adds (or replaces) the cluster's entries in a user's kubeconfig and makes its context current.

    Why in Python: the original needed a local kubectl and an existing ~/.kube. Entries with other
    names are kept byte-for-byte in content and order. Returns True when the file changed.
    """
    path = Path(user_kubeconfig).expanduser()
    new = _load(text, "the cluster kubeconfig")
    mine = {s: [e for e in new[s] if isinstance(e, dict) and e.get("name") == cluster] for s in SECTIONS}
    if not all(mine.values()):
        raise KubeconfigError(f"the cluster kubeconfig has no cluster/user/context named '{cluster}' "
                              "(rename it first)")
    old_text = path.read_text() if path.exists() else ""
    data = _load(old_text, str(path))
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Config")
    for section in SECTIONS:
        data[section] = _replace_named(data[section], mine[section][0])
    data["current-context"] = cluster
    data.setdefault("preferences", {})
    out = _dump(data)
    if out == old_text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, out)
    return True


def current_context(user_kubeconfig: Path) -> str | None:
    """The kubeconfig's current-context (None when the file or the key is missing or unreadable)."""
    path = Path(user_kubeconfig).expanduser()
    try:
        return _load(path.read_text(), str(path)).get("current-context") or None
    except (OSError, KubeconfigError):
        return None


def remove_from(user_kubeconfig: Path, cluster: str, restore: str | None = None) -> bool:
    """Removes exactly the cluster's cluster/user/context entries; True when something was removed.

    `current-context` changes only when it pointed at the removed context: it goes back to
    `restore` (the context that was current before the merge) if that still exists, else it is
    cleared. A user who switched to another cluster meanwhile keeps it.
    """
    path = Path(user_kubeconfig).expanduser()
    if not path.exists():
        return False
    data = _load(path.read_text(), str(path))
    removed = False
    for section in SECTIONS:
        kept = [e for e in data[section] if not (isinstance(e, dict) and e.get("name") == cluster)]
        removed |= len(kept) != len(data[section])
        data[section] = kept
    if data.get("current-context") == cluster:
        names = {c.get("name") for c in data["contexts"] if isinstance(c, dict)}
        data["current-context"] = restore if restore and restore in names else ""
        removed = True
    if removed:
        write_private(path, _dump(data))
    return removed


def default_user_kubeconfig() -> Path:
    """`$KUBECONFIG`'s first entry when set, else ~/.kube/config: where kubectl looks first."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"
