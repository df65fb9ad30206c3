"""Where kubitect keeps its files: one home directory, overridable for tests and users.

A cluster name given on the command line (`--cluster`) becomes a path, and `destroy` deletes
that path. So every name goes through `cluster_dir`, which applies the config's own rule for
`cluster.name` and then checks that the result is a directory directly inside `clusters/`: an
empty name, `.`, `..`, `../x` or `/tmp/x` can never select anything else.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

HOME_ENV = "KUBITECT_HOME"
NAME_MAX = 255  # bytes in one path component (Linux); longer names cannot be a directory


class ClusterNameError(ValueError):
    """A cluster name that is not a valid `cluster.name`, or would leave `clusters/`."""


def kubitect_home(override: str | os.PathLike[str] | None = None) -> Path:
    """The kubitect home: `--home` if given, else $KUBITECT_HOME, else ~/.kubitect.

    One resolution rule for every command, so tests (which set the env var) never touch the
    user's real home.
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".kubitect"


@lru_cache(maxsize=1)
def _name_rule():
    """The validator of the config model's `cluster.name` field, so both places share one rule."""
    from typing import Annotated

    from pydantic import TypeAdapter

    from kubitect_core.config.models import Cluster

    field = Cluster.model_fields["name"]
    return TypeAdapter(Annotated[field.annotation, *field.metadata])


def check_cluster_name(name: str) -> str:
    """Returns `name` if it is a valid cluster name; raises ClusterNameError saying why not."""
    from pydantic import ValidationError

    try:
        _name_rule().validate_python(name)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ClusterNameError(f"'{name}' is not a cluster name: {reason}") from None
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise ClusterNameError(f"'{name[:40]}…' is not a cluster name: longer than {NAME_MAX} bytes")
    return name


def clusters_root(home: Path) -> Path:
    """The directory that holds one directory per cluster."""
    return home / "clusters"


def cluster_dir(home: Path, name: str) -> Path:
    """A cluster's state directory, so every part agrees on where a cluster lives.

    Raises ClusterNameError unless `name` passes the cluster-name rule and the path is a
    directory (or nothing yet) directly inside `clusters/`, not a symlink pointing elsewhere.
    """
    check_cluster_name(name)
    root = clusters_root(home)
    path = root / name
    if path.name != name or path.parent != root:
        raise ClusterNameError(f"'{name}' is not a cluster name: it must name a directory directly "
                               f"inside {root}")
    if path.is_symlink():
        raise ClusterNameError(f"{path} is a symbolic link, not a cluster directory; kubitect does not "
                               "follow it")
    return path


def lock_path(home: Path, name: str) -> Path:
    """The cluster's lock file: outside the cluster directory, so that destroying the directory
    never leaves a second, fresh lock next to one a waiting process still holds."""
    check_cluster_name(name)
    return home / "locks" / f"{name}.lock"


def images_dir(home: Path) -> Path:
    """The image cache shared by every cluster of one home."""
    return home / "images"
