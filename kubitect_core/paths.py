"""Where kubitect keeps its files: one home directory, overridable for tests and users."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "KUBITECT_HOME"


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


def cluster_dir(home: Path, name: str) -> Path:
    """A cluster's state directory, so every part agrees on where a cluster lives."""
    return home / "clusters" / name


def images_dir(home: Path) -> Path:
    """The image cache shared by every cluster of one home."""
    return home / "images"
