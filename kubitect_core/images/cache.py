"""A build cache keyed by recipe hash, committed by an atomic rename.

An image (a rootfs directory, a qcow2 bundle) is rebuilt only when its recipe changes; an
interrupted build leaves only a temporary directory that the next build removes, never a
half-finished cache entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INFO_SUFFIX = ".json"


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """A short, stable digest of a recipe, so any change in it names a new cache entry.

    Package order and duplicates do not matter: lists named `packages` are sorted and deduplicated.
    """
    norm = dict(recipe)
    if "packages" in norm:
        norm["packages"] = sorted(set(norm["packages"]))
    blob = json.dumps(norm, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class CacheEntry:
    """One finished image: its directory, its recipe hash, and its build record."""

    kind: str
    hash: str
    path: Path
    info: dict[str, Any]


def entry_path(images: Path, kind: str, digest: str) -> Path:
    """The directory a finished image of `kind` with recipe `digest` lives in."""
    return images / f"{kind}-{digest}"


def read_info(path: Path) -> dict[str, Any]:
    """The build record written next to a cache entry (empty if missing or unreadable)."""
    info = path.with_name(path.name + INFO_SUFFIX)
    try:
        return json.loads(info.read_text())
    except (OSError, ValueError):
        return {}


def list_entries(images: Path) -> list[CacheEntry]:
    """Every finished image under `images` (temporary build directories are skipped)."""
    out: list[CacheEntry] = []
    if not images.is_dir():
        return out
    for path in sorted(images.iterdir()):
        if path.name.startswith(".") or not path.is_dir() or "-" not in path.name:
            continue
        kind, _, digest = path.name.rpartition("-")
        out.append(CacheEntry(kind, digest, path, read_info(path)))
    return out


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_build(
    images: Path,
    kind: str,
    recipe: Mapping[str, Any],
    build: Callable[[Path], dict[str, Any] | None],
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Return the cached image for `recipe`, building it with `build(tmpdir)` if missing.

    Why this shape: builds take a minute, so they must happen once per recipe; two processes
    asking at once must not build twice (a file lock); a crash mid-build must not leave a
    directory that looks finished (build in `.tmp-*`, then `rename`). `build` fills the empty
    directory it is given and may return extra facts for the build record.
    """
    say = progress or (lambda _msg: None)
    digest = recipe_hash(recipe)
    final = entry_path(images, kind, digest)
    if final.is_dir():
        return final, read_info(final)
    with _locked(images / f".{kind}-{digest}.lock"):
        if final.is_dir():  # built by someone else while we waited
            return final, read_info(final)
        tmp = images / f".tmp-{kind}-{digest}"
        if tmp.exists():
            say(f"removing an interrupted build: {tmp}")
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        started = time.monotonic()
        try:
            extra = build(tmp) or {}
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = round(time.monotonic() - started, 1)
        info = {
            "kind": kind,
            "hash": digest,
            "recipe": dict(recipe),
            "build_seconds": seconds,
            "size_bytes": tree_size(tmp),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        final.with_name(final.name + INFO_SUFFIX).write_text(json.dumps(info, indent=2, default=str))
        tmp.rename(final)
        say(f"{kind} built in {seconds:.1f} s: {final}")
        return final, info


def tree_size(path: Path) -> int:
    """Bytes the files under `path` occupy on disk (hard links counted once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
